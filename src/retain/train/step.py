"""The gradients of one optimizer step: forward and backward over this rank's micro-batches.

The task loss of the step is the mean NLL over every answer token of the whole step (all
micro-batches, all processes): each micro-batch contributes its summed NLL times `scale`
(= processes / answer tokens of the step; DDP averages gradients over processes), so how rows
are split into micro-batches or ranks cannot change the update. Plugin losses are per-micro-
batch means and are averaged over the step's micro-batches.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import torch

from retain.data.encoding import Batch
from retain.methods.base import Plugin, StepOutputs
from retain.train.devices import token_losses

if TYPE_CHECKING:
    from retain.train.loop import ContinualTrainer


def forward(
    model: torch.nn.Module, batch: Batch, needs_hidden: bool
) -> tuple[StepOutputs, torch.Tensor]:
    """The step outputs plugins see, and the summed answer-token NLL of the batch."""
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        output_hidden_states=needs_hidden,
    )
    nll_sum, counts = token_losses(out.logits, batch.labels)
    total = counts.sum().clamp(min=1)
    outputs = StepOutputs(
        logits=out.logits,
        per_sample_loss=nll_sum / counts.clamp(min=1),
        answer_tokens=counts,
        task_loss=nll_sum.sum() / total,
        hidden_states=out.hidden_states if needs_hidden else None,
    )
    return outputs, nll_sum.sum()


def accumulate_gradients(
    trainer: ContinualTrainer, batches: list[Batch], scale: float, lossers: list[Plugin]
) -> tuple[dict[str, Any], list[tuple[Batch, StepOutputs]]]:
    """Backward over every micro-batch (gradients synchronised on the last one only); returns
    the step's named losses (detached, this rank's share) and the detached outputs."""
    accelerator, model, ctx = trainer.accelerator, trainer.model, trainer.ctx
    world = accelerator.num_processes
    step_losses: dict[str, Any] = {}
    micro: list[tuple[Batch, StepOutputs]] = []
    for m, batch in enumerate(batches):
        batch = batch.to(trainer.device)
        sync = m == len(batches) - 1
        with accelerator.no_sync(model) if not sync else nullcontext():
            with accelerator.autocast():
                outputs, nll_total = forward(model, batch, trainer.needs_hidden)
                task_part = nll_total * scale
                loss = task_part
                named = {"task": task_part.detach() / world}
                for plugin in lossers:
                    for name, value in plugin.extra_loss(ctx, batch, outputs).items():
                        loss = loss + value / len(batches)  # per-micro-batch means
                        named[name] = value.detach() / len(batches)
            accelerator.backward(loss)
        for name, value in named.items():
            step_losses[name] = step_losses.get(name, 0.0) + value
        micro.append((batch, outputs.detached()))
        del outputs, loss, task_part
    return step_losses, micro
