"""The training log's step and task-end records: what a run says about each step and task.

Kept apart from the loop so that the per-step path in `train/loop.py` reads as the sequence of
what happens; these only write down what happened.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from retain.train.devices import peak_memory_mb
from retain.train.distributed import reduce_losses

if TYPE_CHECKING:
    from retain.train.batches import StepPlan
    from retain.train.components import Components


def step_record(
    parts: Components,
    t: int,
    plan: StepPlan,
    step_losses: dict[str, Any],
    seconds: float,
    lr: float,
) -> float:
    """Write the step's record (global counts, losses reduced over ranks, the learning rate
    the step used); returns its loss."""
    ctx = parts.ctx
    record_losses = reduce_losses(parts.accelerator, step_losses)
    loss_value = sum(record_losses.values())
    tokens = plan.tokens
    parts.log.write(
        {
            "type": "step",
            "step": ctx.global_step,
            "task": t,
            "task_step": ctx.task_step,
            "loss": loss_value,
            "losses": record_losses,
            "tokens": tokens,
            "samples": plan.samples,
            "replayed": plan.replayed,
            **({"general": plan.general_rows} if plan.general_rows else {}),
            "seconds": seconds,
            "tokens_per_s": tokens / seconds if seconds > 0 else None,
            "lr": lr,
        }
    )
    return float(loss_value)


class TaskClock:
    """A task's wall-clock and CPU time (this process, all threads), counting what it had spent
    up to its checkpoint when it was resumed in mid-way: a task's cost is what an uninterrupted
    run would spend, not what the last process spent."""

    def __init__(self, spent: dict[str, float] | None = None) -> None:
        spent = spent or {}
        self.wall_start = time.perf_counter() - float(spent.get("seconds", 0.0))
        self.cpu_start = time.process_time() - float(spent.get("cpu_seconds", 0.0))

    def spent(self) -> dict[str, float]:
        """Seconds and CPU seconds so far (what a mid-task checkpoint keeps)."""
        return {
            "seconds": time.perf_counter() - self.wall_start,
            "cpu_seconds": time.process_time() - self.cpu_start,
        }


def task_end_record(parts: Components, t: int, steps: int, clock: TaskClock) -> None:
    """Write the task's cost record: time, this process's CPU time (all threads), peak memory
    and the run's counters so far."""
    parts.log.write(
        {
            "type": "task_end",
            "task": t,
            "name": parts.stream.tasks[t].name,
            "steps": steps,
            **clock.spent(),
            "peak_memory_mb": peak_memory_mb(parts.device),
            "peak_memory_scope": parts.peak_memory_scope,
            "counters": dict(parts.ctx.counters),
        }
    )
