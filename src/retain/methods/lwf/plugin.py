"""LwF: distil the previous task's final model into the current one on the current task's
answer tokens (docs/methods/lwf.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from retain.data.encoding import IGNORE_INDEX, Batch
from retain.methods.base import Context, Plugin, StepOutputs
from retain.methods.lwf.distill import distillation
from retain.methods.services import FrozenCopy

if TYPE_CHECKING:
    from retain.config_sections import CoreConfig
    from retain.data.task import Task


class LwFPlugin(Plugin):
    """Learning without forgetting (Li & Hoiem 2016) for causal language models.

    Decision: the teacher is the model as the previous task left it (frozen copy, sharing the
    backbone under LoRA), distilled on the answer tokens of the current task's rows only:
    replayed rows have their own labels and general rows their own loss. The term joins each
    current answer token's NLL: α·KL summed over those tokens and scaled like the task loss
    (`answer_tokens`), so the step holds α × (Σ KL) / (task answer tokens of the step), the
    same under any split into micro-batches and processes.

    Decision (`train.sharding=fsdp2`): the teacher is the previous task's pieces of the copied
    parameters, swapped into the sharded model for its forward (`FrozenCopy`); that forward is
    a collective, so every process runs it on each micro-batch, on all of its rows (none may
    be current on one process and some on another), and keeps the current rows' logits.
    """

    name = "lwf"
    needs_logits = True
    loss_weighting = "answer_tokens"

    def __init__(self, config: CoreConfig, method: str) -> None:
        super().__init__(config)
        self.name = method
        self.teacher: FrozenCopy | None = None
        self.pending: dict[str, torch.Tensor] | None = None

    def on_task_start(self, ctx: Context, task: Task) -> None:
        if self.pending is not None:  # resumed: the saved teacher over the current backbone
            self.teacher = ctx.frozen_copy()
            self.teacher.load_state_dict(self.pending)
            self.pending = None

    def _current(self, ctx: Context, batch: Batch) -> torch.Tensor:
        return (batch.task_ids == ctx.task_index).nonzero().flatten()

    def extra_loss(
        self, ctx: Context, batch: Batch, outputs: StepOutputs
    ) -> dict[str, torch.Tensor]:
        if self.teacher is None:
            return {}
        assert outputs.logits is not None, "the loop keeps full logits for needs_logits"
        rows = self._current(ctx, batch).to(batch.input_ids.device)
        sub = Batch(*(t[rows] for t in batch.__dict__.values()))
        student = outputs.logits[rows]
        if self.teacher.sharded:  # a collective: every process, every micro-batch
            with torch.no_grad(), self.teacher.active() as model:
                every = ctx.forward(batch, model, logits=True).logits
            assert every is not None
            teacher = every[rows]
        elif rows.numel():
            with torch.no_grad(), self.teacher.active() as model:
                teacher = ctx.forward(sub, model, logits=True).logits
            assert teacher is not None
        else:
            teacher = student.detach()
        answer = sub.labels[:, 1:] != IGNORE_INDEX  # logits at i predict token i + 1
        cfg = self.config.lwf
        kl = distillation(student[:, :-1][answer], teacher[:, :-1][answer], cfg.temperature)
        return {"lwf": cfg.weight * kl}

    def after_step(self, ctx: Context, batch: Batch, outputs: StepOutputs) -> None:
        if self.teacher is not None and self._current(ctx, batch).numel():
            ctx.count("extra_forward_passes")  # the teacher's, per micro-batch as on one process

    def on_task_end(self, ctx: Context, task: Task) -> None:
        self.teacher = ctx.frozen_copy()

    def state_dict(self) -> dict[str, Any]:
        if self.teacher is None:
            return {"teacher": self.pending}
        return {"teacher": self.teacher.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.teacher, self.pending = None, state["teacher"]
