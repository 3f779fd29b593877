"""EWC: after each task, a diagonal Fisher of the trainable parameters; while later tasks
train, a quadratic penalty that holds the important ones near their values (docs/methods/ewc.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from retain.data.encoding import Batch
from retain.methods.base import Context, Plugin, StepOutputs
from retain.methods.ewc.fisher import empirical_fisher, penalty
from retain.methods.services import eval_mode

if TYPE_CHECKING:
    from retain.config_sections import CoreConfig
    from retain.data.task import Task

Pair = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]
"""(Fisher, anchor θ*) of the parameters by name."""


class EWCPlugin(Plugin):
    """Elastic weight consolidation (Kirkpatrick et al. 2017), separate or online.

    Decision: the parameters are those that train when a task ends (the adapter's under LoRA
    methods; O-LoRA's current task's LoRA, ProCL's memory and router), so EWC protects what the
    adapter method lets move; a parameter frozen later adds a constant to the penalty, no
    gradient. The penalty is added once per optimizer step (a per-micro-batch value averaged
    over the step's micro-batches), identical on every process.
    """

    name = "ewc"
    fsdp2_unsupported = (
        "its Fisher pass runs each process's own mini-batches through the model, which sharded "
        "processes must run in lockstep"
    )

    def __init__(self, config: CoreConfig, method: str) -> None:
        super().__init__(config)
        self.name = method
        self.consolidated: list[Pair] = []
        self._params: dict[str, torch.nn.Parameter] | None = None
        self._device: torch.device | None = None
        """Where `consolidated` lives once moved to the parameters' device."""

    def _named(self, ctx: Context) -> dict[str, torch.nn.Parameter]:
        if self._params is None:
            self._params = dict(ctx.inner_model.named_parameters())
        return self._params

    def extra_loss(
        self, ctx: Context, batch: Batch, outputs: StepOutputs
    ) -> dict[str, torch.Tensor]:
        if not self.consolidated:
            return {}
        params = self._named(ctx)
        device = next(iter(params.values())).device
        if self._device != device:  # tensors restored from a checkpoint arrive on the CPU
            self.consolidated = [
                ({k: v.to(device) for k, v in f.items()}, {k: v.to(device) for k, v in a.items()})
                for f, a in self.consolidated
            ]
            self._device = device
        return {"ewc": self.config.ewc.weight * penalty(params, self.consolidated)}

    def on_task_end(self, ctx: Context, task: Task) -> None:
        cfg = self.config.ewc
        trainable = {n: p for n, p in self._named(ctx).items() if p.requires_grad}
        rows = ctx.task_samples[ctx.task_index][: cfg.fisher_max_rows]
        size = cfg.fisher_batch_size or self.config.train.batch_size * ctx.processes
        chunks = [rows[i : i + size] for i in range(0, len(rows), size)]
        mine = ctx.shard(chunks)
        with eval_mode(ctx.inner_model):
            fisher = empirical_fisher(
                trainable,
                (ctx.rows(c) for c in mine),
                lambda batch: ctx.forward(batch).task_loss,
                lambda tensors: ctx.reduce(tensors, "sum"),
            )
        ctx.count("extra_forward_passes", len(chunks))  # all processes' passes, as on one
        anchor = {n: p.detach().float().clone() for n, p in trainable.items()}
        if cfg.mode == "online" and self.consolidated:
            old, _ = self.consolidated[0]
            fisher = {n: f + cfg.decay * old[n].to(f.device) if n in old else f
                      for n, f in fisher.items()}
            self.consolidated = [(fisher, anchor)]
        else:
            self.consolidated.append((fisher, anchor))
        ctx.log_event({"type": "ewc", "task": ctx.task_index, "rows": len(rows),
                       "fisher_mean": float(torch.cat([f.flatten() for f in fisher.values()])
                                            .mean()) if fisher else 0.0})

    def state_dict(self) -> dict[str, Any]:
        return {"consolidated": [{"fisher": f, "anchor": a} for f, a in self.consolidated]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.consolidated = [(p["fisher"], p["anchor"]) for p in state["consolidated"]]
        self._device = None
