"""The `ewc:` section: the penalty's weight, its mode and the Fisher pass (docs/methods/ewc.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from retain.config_base import Section


class EWCConfig(Section):
    """Elastic weight consolidation; Avalanche's form of the penalty and the Fisher.

    Decision: the default weight is not tuned on a benchmark: the diagonal Fisher of LoRA
    factors is small (mean squared gradients), so λ is large; look at the logged `ewc` loss
    beside `task` and set `ewc.weight` for your model and stream.
    """

    weight: float = Field(
        1000.0, ge=0, description="λ: the step's loss gets λ · Σ_k Σ_i F_k,i (θ_i − θ*_k,i)²"
    )
    mode: Literal["separate", "online"] = Field(
        "separate",
        description="separate: one Fisher and anchor per finished task, all penalised; "
        "online: one running Fisher F ← decay · F + F_new, anchored at the last task's end",
    )
    decay: float = Field(1.0, ge=0, le=1, description="online: decay γ of the earlier Fisher")
    fisher_batch_size: int | None = Field(
        None,
        gt=0,
        description="rows per mini-batch of the Fisher pass; null: the global batch "
        "(train.batch_size × processes), so N processes compute the Fisher one would",
    )
    fisher_max_rows: int | None = Field(
        None, gt=0, description="Fisher over the task's first N training rows; null: all"
    )
