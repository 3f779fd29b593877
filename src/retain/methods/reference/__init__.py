"""The reference runs every method is measured against: `sequential` (alias `none`), plain
fine-tuning, the lower bound; `multitask`, joint training, the upper bound
(docs/methods/sequential.md, docs/methods/multitask.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from retain.methods.spec import MethodSpec

if TYPE_CHECKING:
    from retain.config_sections import CoreConfig
    from retain.methods.base import Plugin


def no_plugin(config: CoreConfig, method: str) -> Plugin | None:
    return None


def multitask(config: CoreConfig, method: str) -> Plugin | None:
    from retain.methods.reference.multitask import MultitaskPlugin

    return MultitaskPlugin(config)


METHODS = (
    MethodSpec(
        names=("sequential", "none"),
        family=None,
        build=no_plugin,
        summary="plain fine-tuning, the lower bound",
        plain=True,
    ),
    MethodSpec(
        names=("multitask",),
        family=None,
        build=multitask,
        summary="every stage trains on all tasks, the upper bound",
        alone=True,
    ),
)
