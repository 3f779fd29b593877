"""A task's optimizer and learning-rate schedule (a fresh pair per task)."""

from __future__ import annotations

from typing import Any

import torch
from accelerate import Accelerator
from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

from retain.config import TrainConfig


def new_optimizer(
    model: torch.nn.Module, accelerator: Accelerator, tc: TrainConfig, steps: int, lr: float
) -> tuple[Any, Any]:
    """AdamW over the trainable parameters and the schedule of `train.lr_schedule`.

    The schedule counts global optimizer steps. It is not handed to accelerate, whose wrapper
    would step it once per process (warm-up over after 1/N of it, LR 0 halfway).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=tc.weight_decay)
    warmup = int(round(tc.warmup_ratio * steps))
    if tc.lr_schedule == "constant":
        scheduler = get_constant_schedule_with_warmup(optimizer, warmup)
    else:
        scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, steps)
    return accelerator.prepare(optimizer), scheduler
