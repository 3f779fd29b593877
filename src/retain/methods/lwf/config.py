"""The `lwf:` section: distillation weight and temperature (docs/methods/lwf.md)."""

from __future__ import annotations

from pydantic import Field

from retain.config_base import Section


class LwFConfig(Section):
    """Learning without forgetting; Avalanche's form of the distillation term."""

    weight: float = Field(
        1.0, ge=0, description="α: the loss gets α · KL(teacher ‖ student) at temperature T"
    )
    temperature: float = Field(
        2.0, gt=0, description="T: both distributions are softmax(logits / T)"
    )
