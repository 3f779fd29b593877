"""EWC: elastic weight consolidation with a diagonal empirical Fisher, separate or online
(docs/methods/ewc.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from retain.methods.ewc.config import EWCConfig
from retain.methods.spec import MethodSpec

if TYPE_CHECKING:
    from retain.config_sections import CoreConfig
    from retain.methods.base import Plugin


def build(config: CoreConfig, method: str) -> Plugin | None:
    from retain.methods.ewc.plugin import EWCPlugin

    return EWCPlugin(config, method)


METHODS = (
    MethodSpec(
        names=("ewc",),
        family="regularisation",
        build=build,
        sections={"ewc": EWCConfig},
        summary="elastic weight consolidation: a penalty weighted by each finished task's "
        "diagonal Fisher (`ewc.*`)",
    ),
)
