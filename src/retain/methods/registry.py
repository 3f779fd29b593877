"""Method names to plugins, through the packages' own declarations (`methods/names.py`).

Each package's builder imports its plugin only when a run uses it.
"""

from __future__ import annotations

from retain.config_sections import CoreConfig
from retain.methods.base import Plugin
from retain.methods.names import spec_of


def build_plugin(config: CoreConfig, method: str) -> Plugin | None:
    """The plugin of one method; None for plain fine-tuning."""
    spec = spec_of(method)
    if spec is None:  # config validation rejects it first
        raise ValueError(f"no plugin for method {method!r}")
    return spec.build(config, method)


def build_plugins(config: CoreConfig) -> list[Plugin]:
    """Plugins in the order the config names their methods (that order composes batches)."""
    plugins = [p for m in config.methods if (p := build_plugin(config, m)) is not None]
    wrappers = [p.name for p in plugins if p.wraps_model]
    if len(wrappers) > 1:
        raise ValueError(f"methods {wrappers} both replace the model's adapter layers; choose one")
    return plugins
