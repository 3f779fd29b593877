"""Method names to plugins: the one place that knows which plugin implements which method.

Families and the rules for combining them are in `methods/names.py`; each family's plugin is
imported only when a run uses it.
"""

from __future__ import annotations

from retain.config import RunConfig
from retain.methods.base import Plugin
from retain.methods.names import ADAPTER_METHODS, GENERAL_REPLAY_METHODS, REPLAY_METHODS


def build_plugin(config: RunConfig, method: str) -> Plugin | None:
    """The plugin of one method; None for plain fine-tuning."""
    if method in ("sequential", "none"):
        return None
    if method == "multitask":
        from retain.methods.multitask import MultitaskPlugin

        return MultitaskPlugin(config)
    if method in REPLAY_METHODS:
        from retain.methods.replay.plugin import build_replay_plugin

        return build_replay_plugin(config, method)
    if method in GENERAL_REPLAY_METHODS:
        from retain.methods.gere.plugin import GeneralReplayPlugin

        return GeneralReplayPlugin(config, method)
    if method == "olora":
        from retain.methods.olora.plugin import OLoRAPlugin

        return OLoRAPlugin(config)
    if method in ADAPTER_METHODS:
        from retain.methods.procl.plugin import build_adapter_plugin

        return build_adapter_plugin(config, method)
    raise ValueError(f"no plugin for method {method!r}")  # config validation rejects it first


def build_plugins(config: RunConfig) -> list[Plugin]:
    """Plugins in the order the config names their methods (that order composes batches)."""
    plugins = [p for m in config.methods if (p := build_plugin(config, m)) is not None]
    wrappers = [p.name for p in plugins if p.wraps_model]
    if len(wrappers) > 1:
        raise ValueError(f"methods {wrappers} both replace the model's adapter layers; choose one")
    return plugins
