"""The `olora:` section: O-LoRA's per-task rank and penalty weights (docs/methods/olora.md)."""

from __future__ import annotations

from pydantic import Field

from retain.config_base import Section


class OLoRAConfig(Section):
    """O-LoRA settings; defaults of the official code."""

    rank: int = Field(8, gt=0, description="rank of each task's new LoRA")
    lambda_orth: float = Field(
        0.5, ge=0, description="λ1: weight of Σ|A_new A_oldᵀ| (orthogonality to old LoRAs)"
    )
    lambda_l2: float = Field(
        0.0, ge=0, description="λ2: weight of ‖A_new‖_F + ‖B_new‖_F (unsquared)"
    )
