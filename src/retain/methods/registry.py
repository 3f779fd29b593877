"""Method names to plugins: the one place that knows which plugin implements which method."""

from __future__ import annotations

from retain.config import REPLAY_METHODS, RunConfig
from retain.methods.base import Plugin


def build_plugins(config: RunConfig) -> list[Plugin]:
    """Plugins in the order the config names their methods (that order composes batches)."""
    plugins: list[Plugin] = []
    for method in config.methods:
        if method in ("sequential", "none"):
            continue
        if method == "multitask":
            from retain.methods.multitask import MultitaskPlugin

            plugins.append(MultitaskPlugin(config))
        elif method in REPLAY_METHODS:
            from retain.methods.replay import build_replay_plugin

            plugin = build_replay_plugin(config, method)
            if plugin is not None:
                plugins.append(plugin)
        else:  # pragma: no cover - config validation rejects unknown names first
            raise ValueError(f"no plugin for method {method!r}")
    wrappers = [p.name for p in plugins if p.wraps_model]
    if len(wrappers) > 1:
        raise ValueError(f"methods {wrappers} both replace the model's adapter layers; choose one")
    return plugins
