"""retain's continual loop with a Hugging Face Trainer doing each task's optimisation.

`TrainerDriven` is retain's `ContinualTrainer` (stream, plugins, evaluation rows, checkpoints,
adapters, metrics and report: the same code, the same run directory) whose `train_task` hands
the task to `trainer.train()`. The Trainer owns the accelerator, the optimizer and schedule
(fresh per task, as in `retain run`), mixed precision, clipping, logging and its own
checkpoints; retain decides which rows each step trains on and what its loss is:

- the Trainer's data loader yields one placeholder per row slot (retain's `Plugin` hooks change
  a step's rows from what the previous step taught them, so rows cannot be drawn ahead of
  time, and accelerate's loader prefetches a batch); `compute_loss` plans the step on its first
  micro-batch with retain's planner and returns each micro-batch's share of retain's loss
  (`train.step.micro_batch_loss`), already scaled for accumulation;
- a callback runs retain's end of step (`train.step.end_step`: `after_step` hooks, counters,
  the log record) after each optimizer step and saves retain's state next to each Trainer
  checkpoint, so a killed stream resumes through `trainer.train(resume_from_checkpoint=...)`
  and retain's state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from retain.config import RunConfig
from retain.data.encoding import Batch
from retain.data.task import TaskStream, task_lr
from retain.methods.base import Plugin, StepOutputs
from retain.storage.trackers import flat_numbers
from retain.train.batches import StepPlan, StepPlanner
from retain.train.checkpoint import rng_state, set_rng_state
from retain.train.loop import ContinualTrainer
from retain.train.records import TaskClock
from retain.train.resume import restore_rng
from retain.train.step import LossScales, end_step, micro_batch_loss, planned_step

ROWS_KEY = "retain_rows"
"""The key of the placeholder batches retain's data loader gives the Trainer."""


def placeholder_batch(slots: list[int]) -> dict[str, torch.Tensor]:
    """A micro-batch's placeholder: retain's `compute_loss` collates the planned rows itself."""
    return {ROWS_KEY: torch.tensor([len(slots)])}


@dataclass
class TaskRun:
    """The task the Trainer is training and the step it is in."""

    task: int
    steps: int
    planner: StepPlanner
    lossers: list[Plugin]
    rng: dict[str, Any]
    """Generator states as retain's loop leaves them: at the task's start, then after each
    step. Each step starts from them, so what the Trainer draws between steps (its loaders'
    seeds, its own evaluation) changes no dropout mask: the draws are `retain run`'s."""
    plan: StepPlan | None = None
    batches: list[Batch] = field(default_factory=list)
    scales: LossScales | None = None
    micro: list[tuple[Batch, StepOutputs]] = field(default_factory=list)
    losses: dict[str, Any] = field(default_factory=dict)
    step_start: float = 0.0


class TrainerDriven(ContinualTrainer):
    """A `ContinualTrainer` whose tasks a Hugging Face `Trainer` optimises (module docstring)."""

    def __init__(
        self,
        config: RunConfig,
        hf: Any,
        stream: TaskStream | None = None,
        overwrite: bool = False,
    ) -> None:
        self.hf = hf
        self.task_run: TaskRun | None = None
        self.output_root = Path(hf.args.output_dir)
        warmup = float(hf.args.warmup_steps)
        self.warmup_ratio = warmup if warmup < 1 else None
        """TrainingArguments.warmup_steps as a ratio, rounded per task as `retain run` does
        (the Trainer would round up); None: a number of steps, used as given."""
        super().__init__(
            config,
            stream=stream,
            model=hf.model,
            tokenizer=hf.processing_class,
            overwrite=overwrite,
            accelerator=hf.accelerator,
        )
        self.parts.log.sink = self.report_to_trainer

    # ----------------------------------------------------------------- the Trainer's trackers
    def report_to_trainer(self, record: dict[str, Any]) -> None:
        """retain's evaluation rows through `trainer.log`, so they reach the trackers of the
        Trainer's `report_to` (its step losses get there on their own)."""
        if record.get("type") == "eval":
            values = flat_numbers(record["scores"], "retain/eval")
            values.update(flat_numbers(record.get("general") or {}, "retain/general"))
            self.hf.log({"retain/stage": float(record["stage"]), **values})

    def finish(self) -> dict[str, Any]:
        metrics = super().finish()
        keys = ("ap", "aia", "la", "bwt", "forgetting_max", "fwt", "general_delta", "gap_closed")
        final = {f"retain/{k}": float(metrics[k]) for k in keys if metrics.get(k) is not None}
        if self.parts.is_main and final:
            self.hf.log(final)
        return metrics

    def checkpoint_dir(self, t: int, step: int) -> Path:
        return self.output_root / f"task_{t + 1}" / f"checkpoint-{step}"

    # ----------------------------------------------------------------- one task
    def train_task(self, t: int, start_step: int, resume_state: dict[str, Any] | None) -> None:
        parts, hf = self.parts, self.hf
        tc, ctx = parts.config.train, parts.ctx
        task = parts.stream.tasks[t]
        pool, steps = self.begin_task(t)
        checkpoint = None
        if resume_state is not None:
            restore_rng(parts.accelerator, resume_state)  # plugins: restored before on_task_start
            ctx.task_step = start_step
            checkpoint = self.checkpoint_dir(t, start_step)
            if not checkpoint.is_dir():
                raise FileNotFoundError(
                    f"retain's checkpoint continues task {t + 1} at step {start_step}, but the "
                    f"Trainer's checkpoint {checkpoint} is gone (save_total_limit?); keep it, "
                    "or start afresh with overwrite=True"
                )
        args = hf.args
        args.max_steps = steps
        args.learning_rate = task_lr(task.budget, tc.lr)
        if self.warmup_ratio is not None:  # retain's rounding of a ratio, per task
            args.warmup_steps = int(round(self.warmup_ratio * steps))
        args.output_dir = str(self.output_root / f"task_{t + 1}")
        hf.optimizer, hf.lr_scheduler = None, None  # a fresh optimizer per task
        self.task_run = TaskRun(
            t, steps, self.planner_for(t, pool), parts.plugins_with("extra_loss"), rng_state()
        )
        self.task_clock = TaskClock(self.state.task_spent if resume_state is not None else None)
        hf.train(resume_from_checkpoint=str(checkpoint) if checkpoint is not None else None)
        set_rng_state(self.task_run.rng)  # the last step's end, for retain's evaluation row
        if ctx.task_step != steps:
            raise RuntimeError(
                f"the Trainer stopped task {task.name!r} after {ctx.task_step} of {steps} "
                "steps (a callback set should_training_stop?); retain's budget decides a task's "
                "steps"
            )
        self.task_run = None
        self.end_task(t, steps)

    def train_dataloader(self) -> DataLoader:
        """Row slots for exactly the task's steps × accumulation micro-batches per process."""
        run, hf, accelerator = self.task_run, self.hf, self.parts.accelerator
        assert run is not None
        per_process = run.steps * self.parts.config.train.grad_accum
        size = hf._train_batch_size
        slots = range(per_process * size * accelerator.num_processes)
        loader = DataLoader(slots, batch_size=size, shuffle=False, collate_fn=placeholder_batch)
        return accelerator.prepare(loader)

    # ----------------------------------------------------------------- one step
    def micro_loss(self, model: torch.nn.Module) -> torch.Tensor:
        """The next micro-batch's share of retain's step loss (planned on the first one)."""
        run, parts = self.task_run, self.parts
        assert run is not None, "retain's compute_loss runs inside a task"
        if run.plan is None:
            run.step_start = time.perf_counter()
            set_rng_state(run.rng)  # see TaskRun.rng
            step = parts.ctx.task_step
            run.plan, run.batches, run.scales = planned_step(parts, run.planner, step)
            run.micro, run.losses = [], {}
        m = len(run.micro)
        if m >= len(run.batches):
            raise RuntimeError(
                f"the Trainer ran micro-batch {m + 1} of a step planned with {len(run.batches)} "
                "(gradient_accumulation_steps changed after retain was attached?)"
            )
        assert run.scales is not None
        batch = run.batches[m].to(parts.device)
        with parts.accelerator.autocast():
            loss, named, outputs = micro_batch_loss(parts, model, batch, run.scales, run.lossers)
        for name, value in named.items():
            run.losses[name] = run.losses.get(name, 0.0) + value
        run.micro.append((batch, outputs.detached()))
        return loss

    def step_done(self) -> None:
        """After the Trainer's optimizer step: retain's `train.step.end_step`."""
        run = self.task_run
        if run is None or run.plan is None:
            return
        if len(run.micro) != len(run.batches):
            raise RuntimeError(
                f"the Trainer stepped after {len(run.micro)} of {len(run.batches)} micro-batches"
            )
        lr = self.hf.lr_scheduler.get_last_lr()[0]
        end_step(self.parts, self.state, run.task, run.steps, run.plan, run.micro, run.losses,
                 run.step_start, lr)
        run.plan = None
        run.rng = rng_state()

    def saved(self, step: int) -> None:
        """The Trainer wrote `checkpoint-<step>`: retain's state of the same moment beside it."""
        run = self.task_run
        if run is None or step >= run.steps:  # the task's end is saved after its evaluation
            return
        self.optimizer, self.scheduler = self.hf.optimizer, self.hf.lr_scheduler
        set_rng_state(run.rng)  # the step's end, not what the Trainer's evaluation drew since
        self.save(run.task, self.parts.ctx.task_step, "train")
