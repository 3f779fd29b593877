"""LwF: learning without forgetting, distillation from the previous task's model
(docs/methods/lwf.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from retain.methods.lwf.config import LwFConfig
from retain.methods.spec import MethodSpec

if TYPE_CHECKING:
    from retain.config_sections import CoreConfig
    from retain.methods.base import Plugin


def build(config: CoreConfig, method: str) -> Plugin | None:
    from retain.methods.lwf.plugin import LwFPlugin

    return LwFPlugin(config, method)


METHODS = (
    MethodSpec(
        names=("lwf",),
        family="regularisation",
        build=build,
        sections={"lwf": LwFConfig},
        summary="learning without forgetting: KL from the previous task's model on the "
        "current rows' answer tokens (`lwf.*`)",
    ),
)
