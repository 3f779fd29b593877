"""O-LoRA: a new orthogonal LoRA per task (docs/methods/olora.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from retain.methods.olora.config import OLoRAConfig
from retain.methods.spec import MethodSpec

if TYPE_CHECKING:
    from retain.config_sections import CoreConfig
    from retain.methods.base import Plugin


def build(config: CoreConfig, method: str) -> Plugin | None:
    from retain.methods.olora.plugin import OLoRAPlugin

    return OLoRAPlugin(config)


METHODS = (
    MethodSpec(
        names=("olora",),
        family="adapter",
        build=build,
        sections={"olora": OLoRAConfig},
        summary="a new LoRA per task, orthogonal to the frozen earlier ones; exported merged",
        needs_lora=True,
    ),
)
