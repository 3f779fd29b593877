"""One optimizer step, top to bottom: `train_step` (plan, gradients, checks, update, end of
step), then its parts in the order it calls them; `end_step` last (the HF integration calls
it after the Trainer's own update).

The gradients: forward and backward over this rank's micro-batches.

The task loss of the step is the mean NLL over every answer token of the step's task rows (all
micro-batches, all processes): each micro-batch contributes its summed NLL times a scale
(= processes / answer tokens of the step; DDP averages gradients over processes), so how rows
are split into micro-batches or ranks cannot change the update. Plugin losses are per-micro-
batch means and are averaged over the step's micro-batches.

General-text rows (`task_of` -1, added by GeRe) form a loss group of their own, so that a
500-token document cannot swamp a 3-token answer. docs/methods/gere.md's per-row semantics:
the step's loss is `(n_task/n) · CE_task + (n_general/n) · CE_general (+ the general rows'
share of w · L_aux)`, each CE a token mean over its own rows and n counting the step's rows.
Decision: the groups' token means are taken over the whole step (not each micro-batch), as the
task loss always was, so gradient accumulation still equals one big batch (except where a
plugin asks for the reference's per-micro-batch means, `Plugin.ce_per_micro_batch`). A step without
general rows computes exactly what it did before (same operations, bit for bit).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from retain.data.encoding import Batch, collate
from retain.methods.base import Plugin, StepOutputs
from retain.models.hidden import capture_final_hidden
from retain.train import fsdp
from retain.train.batches import StepPlan, StepPlanner
from retain.train.devices import answer_positions, kept_token_losses, token_losses
from retain.train.distributed import global_view
from retain.train.records import step_record

if TYPE_CHECKING:
    from retain.train.components import Components
    from retain.train.state import RunState


@dataclass
class TaskTraining:
    """One task's training as each of its steps sees it."""

    task: int
    steps: int
    lr: float
    """The task's learning rate (`train.lr` or its budget's), named when a step goes wrong."""
    planner: StepPlanner
    lossers: list[Plugin]
    """The plugins that add a loss (`extra_loss`)."""
    optimizer: Any
    scheduler: Any


def train_step(parts: Components, state: RunState, run: TaskTraining, step: int) -> float | None:
    """Step `step` of the task, in the order it happens: plan the global batch, accumulate this
    rank's gradients, refuse a non-finite step, clip, update, then the end of the step (counters,
    `after_step`, the log record). Returns the logged loss, or None on a step not logged."""
    accelerator, tc = parts.accelerator, parts.config.train
    step_start = time.perf_counter()
    plan, batches, scales = planned_step(parts, run.planner, step)
    step_losses, micro = accumulate_gradients(parts, batches, scales, run.lossers)
    fsdp.sync_replicated_grads(parts.model)  # sharded runs only
    stop_if_non_finite(parts, step_losses, run.task, run.lr)
    if tc.max_grad_norm is not None:
        accelerator.clip_grad_norm_(parts.model.parameters(), tc.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    lr = run.scheduler.get_last_lr()[0]
    return end_step(parts, state, run.task, run.steps, plan, micro, step_losses, step_start, lr)


def planned_step(
    parts: Components, planner: StepPlanner, step: int
) -> tuple[StepPlan, list[Batch], LossScales]:
    """The step's global plan (the same on every rank, train/batches.py), this rank's
    micro-batches and their loss scales: how every step starts, under retain's loop or a
    user's Trainer."""
    world, rank = parts.accelerator.num_processes, parts.accelerator.process_index
    plan = planner.plan(step)
    batches = [collate(parts.store, p, parts.pad_id) for p in plan.local(rank, world)]
    return plan, batches, LossScales.of(plan, world)


@dataclass(frozen=True)
class LossScales:
    """What one micro-batch's summed NLL of each group and its plugin losses are multiplied by."""

    task: float
    general: float = 0.0
    micro_batches: int = 1
    step_rows: int = 1
    world: int = 1

    @classmethod
    def of(cls, plan: StepPlan, world: int) -> LossScales:
        if not plan.general_rows:
            return cls(world / max(plan.loss_tokens, 1), 0.0, len(plan.plans), plan.samples, world)
        rows = max(plan.samples, 1)
        task_share = (rows - plan.general_rows) / rows
        return cls(
            task=world * task_share / max(plan.loss_tokens, 1),
            general=world * (plan.general_rows / rows) / max(plan.general_tokens, 1),
            micro_batches=len(plan.plans),
            step_rows=rows,
            world=world,
        )

    def weigh(self, plugin: Plugin, batch: Batch, value: torch.Tensor) -> torch.Tensor:
        """One plugin loss of one micro-batch as it enters the step (`Plugin.loss_weighting`)."""
        if plugin.loss_weighting == "general_rows":
            general = int((batch.task_ids < 0).sum())
            return value * (self.world * general / self.step_rows)
        if plugin.loss_weighting == "each_micro_batch":
            return value
        if plugin.loss_weighting == "answer_tokens":
            return value * self.task
        return value / self.micro_batches


def accumulate_gradients(
    parts: Components, batches: list[Batch], scales: LossScales, lossers: list[Plugin]
) -> tuple[dict[str, Any], list[tuple[Batch, StepOutputs]]]:
    """Backward over every micro-batch (gradients synchronised on the last one only); returns
    the step's named losses (detached, this rank's share) and the detached outputs."""
    accelerator, model = parts.accelerator, parts.model
    step_losses: dict[str, Any] = {}
    micro: list[tuple[Batch, StepOutputs]] = []
    for m, batch in enumerate(batches):
        batch = batch.to(parts.device)
        sync = m == len(batches) - 1
        with accelerator.no_sync(model) if not sync else nullcontext():
            with accelerator.autocast():
                loss, named, outputs = micro_batch_loss(parts, model, batch, scales, lossers)
            accelerator.backward(loss)
        for name, value in named.items():
            step_losses[name] = step_losses.get(name, 0.0) + value
        micro.append((batch, outputs.detached()))
        del outputs, loss
    return step_losses, micro


def micro_batch_loss(
    parts: Components,
    model: torch.nn.Module,
    batch: Batch,
    scales: LossScales,
    lossers: list[Plugin],
) -> tuple[torch.Tensor, dict[str, torch.Tensor], StepOutputs]:
    """One micro-batch's share of the step's loss (task CE, general CE, plugin losses), its
    named parts (detached, this rank's share) and the outputs plugins see; no backward (the
    caller's, or the HF Trainer's in retain.integrations.hf)."""
    world = parts.accelerator.num_processes
    outputs, nll_sum = forward(model, batch, parts.hidden_source, parts.full_logits)
    if any(p.ce_per_micro_batch for p in lossers):
        ce = micro_batch_losses(nll_sum, outputs.answer_tokens, batch, scales)
    else:
        ce = group_losses(nll_sum, batch, scales)
    loss = ce["task"]
    if "general_lm" in ce:
        loss = loss + ce["general_lm"]
    named = {name: part.detach() / world for name, part in ce.items()}
    for plugin in lossers:
        for name, value in plugin.extra_loss(parts.ctx, batch, outputs).items():
            weighted = scales.weigh(plugin, batch, value)
            loss = loss + weighted
            named[name] = weighted.detach()
    return loss, named, outputs


def forward(
    model: torch.nn.Module,
    batch: Batch,
    decoder: torch.nn.Module | None = None,
    full_logits: bool = True,
) -> tuple[StepOutputs, torch.Tensor]:
    """The step outputs plugins see, and the per-row summed answer-token NLL of the batch.

    With `decoder` (some plugin needs hidden states), its last hidden state is captured by a
    forward hook for `StepOutputs.final_hidden`; every other layer's activations stay private.
    Without `full_logits`, only the answer positions go through `lm_head` (`logits_to_keep`):
    the same loss, without projecting every prompt token onto the vocabulary.
    """
    keep = None if full_logits else answer_positions(batch.labels)
    extra = {} if keep is None else {"logits_to_keep": keep}
    with capture_final_hidden(decoder) if decoder is not None else nullcontext() as capture:
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **extra)
    if keep is None:
        nll_sum, counts = token_losses(out.logits, batch.labels)
    else:
        nll_sum, counts = kept_token_losses(out.logits, batch.labels, keep, type(model).__name__)
    total = counts.sum().clamp(min=1)
    outputs = StepOutputs(
        logits=out.logits if keep is None else None,
        per_sample_loss=nll_sum / counts.clamp(min=1),
        answer_tokens=counts,
        task_loss=nll_sum.sum() / total,
        final_hidden=capture.take() if capture is not None else None,
    )
    return outputs, nll_sum


def group_losses(
    nll_sum: torch.Tensor, batch: Batch, scales: LossScales
) -> dict[str, torch.Tensor]:
    """The micro-batch's scaled CE parts: `task` (task rows) and, in a step with general rows,
    `general_lm` (general rows; present on every rank and micro-batch, zero where there are
    none, so that ranks log the same names)."""
    if scales.general == 0.0:
        return {"task": nll_sum.sum() * scales.task}
    general = (batch.task_ids < 0).to(nll_sum.device)
    return {
        "task": nll_sum[~general].sum() * scales.task,
        "general_lm": nll_sum[general].sum() * scales.general,
    }


def micro_batch_losses(
    nll_sum: torch.Tensor, counts: torch.Tensor, batch: Batch, scales: LossScales
) -> dict[str, torch.Tensor]:
    """`Plugin.ce_per_micro_batch` (GeRe's reference, docs/methods/gere_paper.md): the
    micro-batch's loss is the mean of the token-mean CE of its task rows and of its general
    rows (the groups it holds), over the step's micro-batches; no `world` factor, since DDP
    averages the ranks' gradients as HF Trainer's does. Both names are always present."""
    general = (batch.task_ids < 0).to(nll_sum.device)
    groups = {"task": ~general, "general_lm": general}
    present = sum(1 for rows in groups.values() if bool(rows.any()))
    share = 1.0 / (max(present, 1) * scales.micro_batches)
    return {
        name: nll_sum[rows].sum() / counts[rows].sum().clamp(min=1) * share
        for name, rows in groups.items()
    }


def stop_if_non_finite(
    parts: Components, step_losses: dict[str, Any], t: int, lr: float
) -> None:
    """Raise `NonFiniteError` before the optimizer step when `non_finite` finds something, so
    the last checkpoint stays intact; the message names the step, the task and the likely cause."""
    bad = non_finite(parts, step_losses)
    if bad is None:
        return
    ctx = parts.ctx
    name = parts.stream.tasks[t].name
    raise NonFiniteError(
        f"non-finite {bad} at step {ctx.global_step + 1} (task {t + 1} {name!r}, its step "
        f"{ctx.task_step + 1}); training stopped before this update, nothing was written over; "
        f"likely cause: train.lr={lr:g} too high for this model, or a broken example in the "
        "task's data; lower train.lr (or set train.max_grad_norm) or check the data, then run "
        "again with --overwrite"
    )


def non_finite(parts: Components, step_losses: dict[str, Any]) -> str | None:
    """What is non-finite in the step just accumulated ('loss nan', 'gradient norm inf'), or
    None. Under fp16 the gradients are not checked: the loss scaler skips an overflowing step
    and lowers its scale, which is normal, not a failure. Every rank gets the same answer."""
    accelerator, device = parts.accelerator, parts.device
    losses = [v.float().sum() for v in step_losses.values() if isinstance(v, torch.Tensor)]
    loss = torch.stack(losses).sum() if losses else torch.zeros((), device=device)
    values = [loss.reshape(()).to(device)]
    if getattr(accelerator, "scaler", None) is None:
        grads = [p.grad for p in parts.model.parameters() if p.grad is not None]
        if grads:  # FSDP2: this rank's shards (DTensors beside replicated tensors under
            # ProCL); a non-finite shard shows in the flags reduced over ranks below
            local = [g.to_local() if hasattr(g, "to_local") else g for g in grads]
            values.append(torch.nn.utils.get_total_norm(local).float().to(device))
    stacked = torch.stack(values)
    bad = (~torch.isfinite(stacked)).float()
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, reduction="sum")
    flags = bad.tolist()
    if not any(flags):
        return None
    names = ("loss", "gradient norm")
    shown = stacked.tolist()
    return " and ".join(f"{names[i]} {shown[i]}" for i, f in enumerate(flags) if f)


class NonFiniteError(ValueError):
    """A step's loss or gradient is NaN or infinite: training on would only spread it."""


def end_step(
    parts: Components,
    state: RunState,
    t: int,
    steps: int,
    plan: StepPlan,
    micro: list[tuple[Batch, StepOutputs]],
    step_losses: dict[str, Any],
    step_start: float,
    lr: float,
) -> float | None:
    """After the optimizer step: the step counts, `after_step` on the global view, the step's
    counters and its log record (every `train.log_every`, and the task's last step); returns the
    logged loss, or None. `lr`: the learning rate the step used, for the record."""
    ctx, tc = parts.ctx, parts.config.train
    state.advance(ctx)
    after = parts.plugins_with("after_step")
    if after:  # the global view gathers across ranks: only for plugins that read it
        view = global_view(parts.accelerator, plan, micro, parts.store, parts.pad_id)
        for batch, outputs in view:
            for plugin in after:
                plugin.after_step(ctx, batch, outputs)
    ctx.count("samples", plan.samples)  # global, as every count below
    ctx.count("tokens", plan.tokens)
    ctx.count("replayed_rows", plan.replayed)
    if plan.general_rows:
        ctx.count("general_rows", plan.general_rows)
    seconds = time.perf_counter() - step_start
    if not (ctx.task_step % tc.log_every == 0 or ctx.task_step == steps):
        return None
    return step_record(parts, t, plan, step_losses, seconds, lr)
