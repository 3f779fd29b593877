"""`OLoRAPlugin`: O-LoRA (Wang et al. 2023), a new orthogonal LoRA per task (docs/methods/olora.md).

Loss `CE + λ1 Σ_old Σ|A_new A_oldᵀ| + λ2 (‖A_new‖_F + ‖B_new‖_F)`, old LoRAs frozen, all
LoRAs summed in every forward (evaluation too), exported after each task as ONE merged
standard PEFT adapter (`adapters.py`).

Hook use: `wrap_model` swaps the run's LoRA for O-LoRA's `new` adapter (rank `olora.rank`) and
gives every LoRA layer frozen room for the stream's finished tasks; `on_task_start` archives the
previous task's LoRA and draws a fresh one; `extra_loss` returns the two terms by name
(`olora_orth`, `olora_l2`; both logged every step); `export_adapter` writes the merged adapter.

Scale (penalty.py): users of the official code report the orthogonality term thousands of times
the CE; it is a sum over every entry of r × r·(t−1) products in every adapted layer (≈ 42 per
finished task on SmolLM2-135M at r = 8, before λ1), while the CE is a per-token mean. The step
log shows both side by side (`losses.task`, `losses.olora_orth`, `losses.olora_l2`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from retain.config_sections import CoreConfig
from retain.data.encoding import Batch
from retain.methods.base import Context, Plugin, StepOutputs
from retain.methods.olora.adapters import (
    ADAPTER,
    PAST,
    PastTasks,
    add_task_adapter,
    archive_current,
    attach_past_tasks,
    reset_current,
    save_merged_adapter,
)
from retain.methods.olora.penalty import l2, orthogonality

if TYPE_CHECKING:
    from retain.data.task import Task

RESET_SEED_TAG = 0x4F4C4F52
"""Seed stream of each task's fresh LoRA (run seed, task): a resumed run draws the same."""


class OLoRAPlugin(Plugin):
    """O-LoRA over PEFT LoRA layers.

    Decision (docs/methods/olora.md, official code): the terms are added to each micro-batch's
    loss after the CE is divided by the accumulation steps, so per optimizer step they weigh
    `grad_accum × λ`: the plugin asks the loop for `each_micro_batch` weighting, and the logged
    values are what the step's loss holds.
    Decision: each task's LoRA has rank `olora.rank` with `model.lora`'s α, dropout and target
    modules; a fresh LoRA is drawn (as PEFT initialises one) at every task start, task 1 too.
    """

    name = "olora"
    loss_weighting = "each_micro_batch"
    wraps_model = True

    def __init__(self, config: CoreConfig) -> None:
        super().__init__(config)
        self.layers: list[tuple[str, nn.Module]] = []
        self.task_index = -1
        self.in_task = False
        self.archived = 0
        """Finished tasks whose LoRAs are frozen in `past_tasks`."""

    def _past(self, layer: nn.Module) -> PastTasks:
        return getattr(layer, PAST)  # type: ignore[no-any-return]

    # ---------------------------------------------------------------- hooks
    def wrap_model(self, ctx: Context, model: nn.Module) -> nn.Module:
        add_task_adapter(model, self.config.olora.rank)
        self.layers = attach_past_tasks(model, max(len(ctx.stream) - 1, 0))
        return model

    def on_task_start(self, ctx: Context, task: Task) -> None:
        """Freeze the previous task's LoRA into `past_tasks`, start a fresh one; a mid-task
        resume keeps the restored state."""
        t = ctx.task_index
        if self.in_task and self.task_index == t:
            return
        if t >= 1 and self.archived == t - 1:
            archive_current(self.layers, self.archived)
            self.archived = t
        seq = np.random.SeedSequence([self.config.seed, RESET_SEED_TAG, t])
        generator = torch.Generator().manual_seed(int(seq.generate_state(1, np.uint64)[0] >> 1))
        reset_current(self.layers, generator)
        self.task_index, self.in_task = t, True

    def penalties(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The unweighted terms, summed over layers: (Σ|A_new A_pastᵀ|, Σ ‖A_new‖ + ‖B_new‖)."""
        orth: torch.Tensor | None = None
        norm: torch.Tensor | None = None
        for _, layer in self.layers:
            a_new = layer.lora_A[ADAPTER].weight
            b_new = layer.lora_B[ADAPTER].weight
            a_past, _ = self._past(layer).factors()
            o, n = orthogonality(a_new, a_past), l2(a_new, b_new)
            orth = o if orth is None else orth + o
            norm = n if norm is None else norm + n
        assert orth is not None and norm is not None
        return orth, norm

    def extra_loss(
        self, ctx: Context, batch: Batch, outputs: StepOutputs
    ) -> dict[str, torch.Tensor]:
        cfg = self.config.olora
        orth, norm = self.penalties()
        return {"olora_orth": cfg.lambda_orth * orth, "olora_l2": cfg.lambda_l2 * norm}

    def on_task_end(self, ctx: Context, task: Task) -> None:
        self.in_task = False

    def export_adapter(
        self,
        ctx: Context,
        model: nn.Module,
        path: Path,
        state_dict: dict[str, Any] | None = None,
    ) -> None:
        """All tasks' LoRAs so far as one standard PEFT LoRA (ranks concatenated)."""
        save_merged_adapter(model, self.layers, path, state_dict)

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """The frozen past tasks' factors (not among the trainable parameters), copied."""
        return {
            "method": self.name,
            "task_index": self.task_index,
            "in_task": self.in_task,
            "archived": self.archived,
            "past": {
                name: {"A": self._past(layer).A.detach().clone(),
                       "B": self._past(layer).B.detach().clone()}
                for name, layer in self.layers
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["method"] != self.name:
            raise ValueError(f"checkpoint of {state['method']!r} cannot resume {self.name!r}")
        saved = state["past"]
        if sorted(saved) != sorted(name for name, _ in self.layers):
            raise ValueError("checkpoint of olora adapts other layers than this model")
        self.archived = int(state["archived"])
        with torch.no_grad():
            for name, layer in self.layers:
                past = self._past(layer)
                past.A.copy_(saved[name]["A"])
                past.B.copy_(saved[name]["B"])
                past.rows = self.archived * layer.lora_A[ADAPTER].weight.shape[0]
        self.task_index = int(state["task_index"])
        self.in_task = bool(state["in_task"])


__all__ = ["OLoRAPlugin"]
