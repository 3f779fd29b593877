"""The continual loop: evaluate row 0, then for each task train, evaluate every task, checkpoint.

One lean loop on accelerate (so DDP/FSDP/DeepSpeed come from an existing engine). It controls
batch composition step by step so that plugins can mix replay rows in, computes the loss once
from the logits so that per-sample losses are free for methods that track samples, and calls
each hook only on the plugins that implement it.

A run is its parts (train/components.py, built by train/build.py) and its state (train/state.py);
this module is the task loop. One step, top to bottom: train/step.py. Evaluation rows and
adapters: train/evaluation.py. Checkpoints and resume: train/resume.py. metrics.json:
train/outcome.py.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from retain.config import RunConfig
from retain.data.task import TaskBudget, TaskStream, task_lr, task_steps
from retain.models.sharding import gathered
from retain.progress import progress
from retain.train import fsdp  # retain's own FSDP2 (train.sharding=fsdp2)
from retain.train.batches import StepPlanner, task_planner
from retain.train.build import build_components
from retain.train.distributed import plugin_state_digests
from retain.train.evaluation import evaluate_stage, export_adapter
from retain.train.optim import new_optimizer
from retain.train.outcome import final_metrics
from retain.train.records import TaskClock, task_end_record
from retain.train.resume import load_resume_state, restore_rng, save_state, write_fingerprint
from retain.train.state import Position, RunState
from retain.train.step import TaskTraining, train_step


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    resumed: bool


class ContinualTrainer:
    """One run: its parts (`parts`, train/components.py) and its state (`state`,
    train/state.py); the task loop below, one step in train/step.py."""

    def __init__(
        self,
        config: RunConfig,
        stream: TaskStream | None = None,
        model: torch.nn.Module | None = None,
        tokenizer: Any = None,
        overwrite: bool = False,
        accelerator: Accelerator | None = None,
    ) -> None:
        """`overwrite`: clear a run directory that holds no checkpoint of this run (--overwrite);
        without it such a directory is refused, never overwritten. `accelerator`: one owned by
        another trainer (retain.integrations.hf), which then prepares the model itself."""
        self.parts = build_components(config, stream, model, tokenizer, overwrite, accelerator)
        parts = self.parts
        self.state = RunState.fresh(parts.stream, parts.evaluator.general_names, config.eval)
        self.state.share_with(parts.ctx)
        self.optimizer: Any = None
        self.scheduler: Any = None
        """The current task's (fresh per task), saved with a checkpoint taken mid-task."""
        self.task_clock = TaskClock()
        """The current task's time, kept by a checkpoint taken mid-task."""

    # ----------------------------------------------------------------- set-up helpers
    def reserved_rows(self) -> int:
        """Rows of every global batch that plugins fill themselves (`compose_step`)."""
        ctx = self.parts.ctx
        return sum(p.reserved_rows(ctx) for p in self.parts.plugins_with("compose_step"))

    def steps_for(self, pool_size: int, budget: TaskBudget | None = None) -> int:
        """Optimizer steps of a task: its own budget from the stream file, else train.*; an
        epoch is one pass over the pool, so rows reserved by plugins do not count."""
        tc = self.parts.config.train
        per_step = tc.batch_size * tc.grad_accum * self.parts.accelerator.num_processes
        per_step -= self.reserved_rows()
        return task_steps(
            budget or TaskBudget(), tc.steps_per_task, tc.epochs_per_task, pool_size, per_step
        )

    # ----------------------------------------------------------------- checkpoints
    # What a checkpoint holds and when a resume is refused: train/resume.py.
    def save(self, task: int, step: int, phase: str) -> None:
        self.state.task_spent = self.task_clock.spent() if phase == "train" else {}
        save_state(
            self.parts, self.state, Position(task, step, phase), self.optimizer, self.scheduler
        )

    def close(self) -> None:
        """Release the run directory's lock (also released when the process ends)."""
        self.parts.lock.release()

    # ----------------------------------------------------------------- training
    def begin_task(self, t: int) -> tuple[list[int], int]:
        """A task's training pool (after `task_data`) and optimizer steps; `on_task_start` runs."""
        parts = self.parts
        task, ctx = parts.stream.tasks[t], parts.ctx
        pool = list(ctx.task_samples[t])
        for plugin in parts.plugins_with("task_data"):
            pool = plugin.task_data(ctx, t, pool)
        if not pool:
            raise ValueError(f"task {task.name!r} has no training samples")
        steps = self.steps_for(len(pool), task.budget)
        ctx.task_index, ctx.steps_in_task, ctx.task_step = t, steps, 0
        for plugin in parts.plugins_with("on_task_start"):
            plugin.on_task_start(ctx, task)
        return pool, steps

    def planner_for(self, t: int, pool: list[int]) -> StepPlanner:
        """The same global order on every rank (see train/batches.py)."""
        parts = self.parts
        tc = parts.config.train
        return task_planner(
            parts.store, pool, parts.config.seed, t, parts.ctx,
            tc.batch_size * parts.accelerator.num_processes, tc.grad_accum,
            parts.plugins_with("compose_batch"), parts.plugins_with("compose_step"),
            self.reserved_rows(),
        )

    def end_task(self, t: int, steps: int) -> None:
        """`on_task_end`, the ranks' plugin digests and the task's cost record."""
        parts = self.parts
        task, ctx = parts.stream.tasks[t], parts.ctx
        for plugin in parts.plugins_with("on_task_end"):
            plugin.on_task_end(ctx, task)
        if parts.accelerator.num_processes > 1:  # every rank must hold the same plugin state
            with gathered(parts.model):  # plugin tensors that live in the model, whole
                digests = plugin_state_digests(parts.accelerator, parts.plugins)
            parts.log.write({"type": "rank_state", "task": t, "plugin_digests": digests})
            if len(set(digests)) != 1:
                raise RuntimeError(f"plugin states differ across ranks after task {task.name}")
        task_end_record(parts, t, steps, self.task_clock)

    def train_task(self, t: int, start_step: int, resume_state: dict[str, Any] | None) -> None:
        """Task `t` from `start_step`; `resume_state`: the checkpoint it was saved in mid-way."""
        parts = self.parts
        task, tc = parts.stream.tasks[t], parts.config.train
        pool, steps = self.begin_task(t)
        lr = task_lr(task.budget, tc.lr)
        self.optimizer, self.scheduler = new_optimizer(
            parts.model, parts.accelerator, tc, steps, lr
        )
        if resume_state is not None:
            fsdp.load_optimizer_state(parts.model, self.optimizer, resume_state["optimizer"])
            self.scheduler.load_state_dict(resume_state["scheduler"])
            restore_rng(parts.accelerator, resume_state)  # plugins: restored before on_task_start
            parts.ctx.task_step = start_step
        run = TaskTraining(
            t, steps, lr, self.planner_for(t, pool), parts.plugins_with("extra_loss"),
            self.optimizer, self.scheduler,
        )
        parts.model.train()
        self.task_clock = TaskClock(self.state.task_spent if resume_state is not None else None)
        bar = progress(
            steps, f"task {t + 1}/{len(parts.stream)} {task.name}", tc.progress, start_step
        )
        every = tc.checkpoint_every
        for step in range(start_step, steps):
            loss_value = train_step(parts, self.state, run, step)
            if loss_value is not None:
                bar.set_postfix(loss=f"{loss_value:.3f}")
            bar.update(1)
            done = parts.ctx.task_step
            if every and done % every == 0 and done < steps:
                self.save(t, done, "train")
        bar.close()
        self.end_task(t, steps)

    def run(self) -> RunResult:
        parts = self.parts
        # restored from the newest intact checkpoint (data fingerprint checked), or None
        resumed = load_resume_state(parts)
        checkpoint: dict[str, Any] | None = None
        if resumed is None:
            self.start()
        else:
            self.state, checkpoint = resumed
        pos = self.state.position
        for t in range(pos.first_task(), len(parts.stream)):
            mid_task = pos.phase == "train" and t == pos.task
            self.train_task(t, pos.start_step(t), checkpoint if mid_task else None)
            with gathered(parts.model):
                evaluate_stage(parts, self.state, t + 1)
            export_adapter(parts, t)
            self.save(t, 0, "done")
        return RunResult(parts.run_dir, self.finish(), resumed is not None)

    def start(self) -> None:
        """A fresh run: environment and fingerprint files, `on_stream_start`, row 0 and its
        checkpoint."""
        from retain.storage.files import write_json
        from retain.storage.rundir import environment

        parts = self.parts
        parts.log.truncate(0)
        if parts.is_main:
            write_json(parts.run_dir / "environment.json", environment(parts.device))
        write_fingerprint(parts)
        for plugin in parts.plugins_with("on_stream_start"):
            plugin.on_stream_start(parts.ctx)
        with gathered(parts.model):  # whole weights: ranks score different examples
            evaluate_stage(parts, self.state, 0)
        self.save(-1, 0, "done")

    def finish(self) -> dict[str, Any]:
        """metrics.json (what it holds: train/outcome.py) and the report."""
        from retain.results.report import write_report
        from retain.storage.files import write_json

        parts = self.parts
        metrics = final_metrics(parts, self.state)
        for text in metrics["warnings"]:
            parts.log.write({"type": "warning", "message": text})
            if parts.is_main:
                print(f"warning: {text}", file=sys.stderr)
        parts.log.close()
        parts.trackers.final(metrics)
        if parts.is_main:
            write_json(parts.run_dir / "metrics.json", metrics)
            write_report(parts.run_dir, figures=parts.config.eval.figures)
        return metrics


def run(config: RunConfig, **kwargs: Any) -> RunResult:
    """Run (or resume) one continual-learning run and write its directory.

    `overwrite=True` clears a run directory that holds no checkpoint of this run."""
    random.seed(config.seed)
    trainer = ContinualTrainer(config, **kwargs)
    try:
        return trainer.run()
    finally:
        trainer.close()
