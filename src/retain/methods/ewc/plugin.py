"""EWC: after each task, a diagonal Fisher of the trainable parameters; while later tasks
train, a quadratic penalty that holds the important ones near their values (docs/methods/ewc.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from retain.data.encoding import Batch
from retain.methods.base import Context, Plugin, StepOutputs
from retain.methods.ewc.fisher import empirical_fisher, penalty
from retain.methods.services import eval_mode, persistent_parameters, whole_weights

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

    Decision (`train.sharding=fsdp2`): the Fisher and the anchors are full tensors, the same
    on every process, like the checkpoint that holds them: the Fisher pass runs with the
    weights gathered whole (each process its own mini-batches, no collective per pass), and
    the penalty takes each process's piece of them (`_Pieces`). Cost: under full fine-tuning
    every process holds two fp32 copies of the whole model for EWC, unsharded.
    """

    name = "ewc"

    def __init__(self, config: CoreConfig, method: str) -> None:
        super().__init__(config)
        self.name = method
        self.consolidated: list[Pair] = []
        self._params: dict[str, torch.nn.Parameter] | None = None
        self._device: torch.device | None = None
        """Where `consolidated` lives once moved to the parameters' device."""
        self._pieces: _Pieces | None = None
        """`consolidated` cut as the (possibly sharded) parameters are, rebuilt on change."""

    def on_task_start(self, ctx: Context, task: Task) -> None:
        # outside any forward: a sharded model's own parameters, not the whole ones it gathers
        self._params = persistent_parameters(ctx.inner_model)

    def _named(self, ctx: Context) -> dict[str, torch.nn.Parameter]:
        if self._params is None:
            self._params = persistent_parameters(ctx.inner_model)
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
            self._pieces = None
        if self._pieces is None:
            self._pieces = _Pieces(params, self.consolidated)
        return {"ewc": self.config.ewc.weight * self._pieces.penalty(ctx)}

    def on_task_end(self, ctx: Context, task: Task) -> None:
        cfg = self.config.ewc
        rows = ctx.task_samples[ctx.task_index][: cfg.fisher_max_rows]
        size = cfg.fisher_batch_size or self.config.train.batch_size * ctx.processes
        chunks = [rows[i : i + size] for i in range(0, len(rows), size)]
        mine = ctx.shard(chunks)
        # sharded: whole weights, read here by name (the names the sharded ones carry)
        with whole_weights(ctx.inner_model, backward=True), eval_mode(ctx.inner_model):
            trainable = {
                n: p for n, p in ctx.inner_model.named_parameters() if p.requires_grad
            }
            fisher = empirical_fisher(
                trainable,
                (ctx.rows(c) for c in mine),
                lambda batch: ctx.forward(batch).task_loss,
                lambda tensors: ctx.reduce(tensors, "sum"),
            )
            anchor = {n: p.detach().float().clone() for n, p in trainable.items()}
        ctx.count("extra_forward_passes", len(chunks))  # all processes' passes, as on one
        if cfg.mode == "online" and self.consolidated:
            old, _ = self.consolidated[0]
            fisher = {n: f + cfg.decay * old[n].to(f.device) if n in old else f
                      for n, f in fisher.items()}
            self.consolidated = [(fisher, anchor)]
        else:
            self.consolidated.append((fisher, anchor))
        self._pieces = None
        ctx.log_event({"type": "ewc", "task": ctx.task_index, "rows": len(rows),
                       "fisher_mean": float(torch.cat([f.flatten() for f in fisher.values()])
                                            .mean()) if fisher else 0.0})

    def state_dict(self) -> dict[str, Any]:
        return {"consolidated": [{"fisher": f, "anchor": a} for f, a in self.consolidated]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.consolidated = [(p["fisher"], p["anchor"]) for p in state["consolidated"]]
        self._device, self._pieces = None, None


class _Pieces:
    """The consolidated pairs cut as the parameters are: a sharded parameter's Fisher and
    anchor as this process's piece (`models.sharding.local_part`), a whole one's whole.

    The penalty is a sum over elements, so each process sums its pieces, and the processes'
    sums add up to the whole penalty (one all-reduce of a scalar per call, in lockstep like
    the sharded forwards). Each process's gradient flows to its own piece only, which is that
    piece of the whole penalty's gradient: FSDP2 adds it to the reduced task gradient as is."""

    def __init__(self, params: dict[str, torch.nn.Parameter], pairs: list[Pair]) -> None:
        from retain.models.sharding import is_shard, local_part

        self.sharded = {n: p for n, p in params.items() if is_shard(p)}
        self.whole = {n: p for n, p in params.items() if not is_shard(p)}

        def cut(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            return {n: local_part(t, params[n]) if n in params else t for n, t in tensors.items()}

        self.pairs: list[Pair] = [(cut(f), cut(a)) for f, a in pairs]

    def penalty(self, ctx: Context) -> torch.Tensor:
        whole = penalty(self.whole, self.pairs)
        if not self.sharded:
            return whole
        local = {n: p.to_local() for n, p in self.sharded.items()}  # type: ignore[attr-defined]
        mine = penalty(local, self.pairs)  # type: ignore[arg-type]
        (total,) = ctx.reduce([mine.detach().clone()], "sum")
        return whole + mine + (total - mine.detach())  # the value of all, the gradient of mine
