"""What several processes must share so that a run on N of them equals a run on one.

Each rank trains on its slice of the global step (train/batches.py); here the slices' results
are brought together: per-sample losses for the plugins' `after_step` (memory strengths and
loss triggers then see every row of the step, on every rank alike), the logged losses, and the
evaluation shards. With one process every function is the identity.
"""

from __future__ import annotations

from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from retain.data.encoding import Batch, SampleStore, collate
from retain.eval.sharding import Shards
from retain.methods.base import StepOutputs
from retain.train.batches import StepPlan


def shards(accelerator: Accelerator) -> Shards:
    """This process's share of every evaluation set."""
    world = accelerator.num_processes
    if world == 1:
        return Shards()
    return Shards(accelerator.process_index, world, lambda part: gather_object([part]))


def global_view(
    accelerator: Accelerator,
    plan: StepPlan,
    micro: list[tuple[Batch, StepOutputs]],
    store: SampleStore,
    pad_id: int,
) -> list[tuple[Batch, StepOutputs]]:
    """The step's micro-batches as one process with the whole global batch would have seen
    them: rows in global plan order, per-sample losses gathered from every rank."""
    if accelerator.num_processes == 1:
        return micro
    out = []
    for global_plan, (_, outputs) in zip(plan.plans, micro, strict=True):
        losses = accelerator.gather(outputs.per_sample_loss.contiguous())
        counts = accelerator.gather(outputs.answer_tokens.contiguous())
        batch = collate(store, global_plan, pad_id)
        total = (losses * counts).sum() / counts.sum().clamp(min=1)
        out.append(
            (batch, StepOutputs(None, losses.cpu(), counts.cpu(), total.cpu()))
        )
    return out


SHARED_LOSSES = ("task", "general_lm")
"""Losses logged as per-rank shares of a global mean (train/step.py): summed over ranks."""


def reduce_losses(accelerator: Accelerator, losses: dict[str, Any]) -> dict[str, float]:
    """Logged losses of the whole step: the CE groups are sums of per-rank shares of the global
    mean (so summed), plugin losses are per-rank means (so averaged)."""
    if accelerator.num_processes == 1:
        return {name: float(v) for name, v in losses.items()}
    names = sorted(losses)
    values = torch.stack([torch.as_tensor(losses[n], dtype=torch.float32) for n in names])
    total = accelerator.reduce(values.to(accelerator.device), "sum").cpu()
    world = accelerator.num_processes
    return {
        n: float(total[i]) if n in SHARED_LOSSES else float(total[i]) / world
        for i, n in enumerate(names)
    }


def plugin_state_digests(accelerator: Accelerator, plugins: list[Any]) -> list[str]:
    """A digest of every plugin's state on every rank (rank order): they must all be equal,
    since every rank plans the same global steps and sees the same gathered losses."""
    import hashlib

    from retain.train.checkpoint import state_bytes

    digest = hashlib.sha256(b"".join(state_bytes(p.state_dict()) for p in plugins)).hexdigest()
    if accelerator.num_processes == 1:
        return [digest]
    return list(gather_object([digest]))


def check_process_count(accelerator: Accelerator) -> None:
    """Refuse an accelerator that does not span every process the launcher started.

    Under torchrun (or `accelerate launch`) on a machine without an accelerator device, an
    `Accelerator()` built without `cpu=True` reports one process per rank: each rank would then
    train alone, with no gradient sync, and nothing would say so. retain's loop builds its
    accelerator right; this check guards every other entry (the Trainer integration, an
    accelerator a user builds) and is meant to be called right after building one."""
    import os

    launched = os.environ.get("WORLD_SIZE")
    if launched is None:
        return
    try:
        expected = int(launched)
    except ValueError:
        raise ValueError(f"WORLD_SIZE={launched!r}: expected the number of processes") from None
    if accelerator.num_processes != expected:
        raise RuntimeError(
            f"the launcher started {expected} processes (WORLD_SIZE={expected}) but this "
            f"Accelerator spans {accelerator.num_processes}: every rank would train alone with "
            "no gradient sync; on a machine without GPUs build it with "
            "Accelerator(cpu=retain.train.devices.cpu_only()), or launch one process per device"
        )
