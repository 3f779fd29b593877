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
    from retain.train.loop import ContinualTrainer


def step_record(
    trainer: ContinualTrainer, t: int, plan: StepPlan, step_losses: dict[str, Any], seconds: float
) -> float:
    """Write the step's record (global counts, losses reduced over ranks); returns its loss."""
    ctx = trainer.ctx
    record_losses = reduce_losses(trainer.accelerator, step_losses)
    loss_value = sum(record_losses.values())
    tokens = plan.tokens
    trainer.log.write(
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
            "lr": trainer.scheduler.get_last_lr()[0],
        }
    )
    return float(loss_value)


def task_end_record(
    trainer: ContinualTrainer, t: int, steps: int, task_start: float, task_cpu: float
) -> None:
    """Write the task's cost record: time, this process's CPU time (all threads), peak memory
    and the run's counters so far."""
    trainer.log.write(
        {
            "type": "task_end",
            "task": t,
            "name": trainer.stream.tasks[t].name,
            "steps": steps,
            "seconds": time.perf_counter() - task_start,
            "cpu_seconds": time.process_time() - task_cpu,
            "peak_memory_mb": peak_memory_mb(trainer.device),
            "peak_memory_scope": trainer.peak_memory_scope,
            "counters": dict(trainer.ctx.counters),
        }
    )
