"""The continual loop: evaluate row 0, then for each task train, evaluate every task, checkpoint.

One lean loop on accelerate (so DDP/FSDP/DeepSpeed come from an existing engine). It controls
batch composition step by step so that plugins can mix replay rows in, computes the loss once
from the logits so that per-sample losses are free for methods that track samples, and calls
each hook only on the plugins that implement it.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed

from retain.config import ConfigError, RunConfig
from retain.data.encoding import (
    Batch,
    SampleStore,
    collate,
    encode_train_example,
)
from retain.data.task import TaskBudget, TaskStream, task_lr, task_steps
from retain.eval.evaluate import (
    EncodedEvalSet,
    decoding_settings,
    model_context_length,
    score_type,
)
from retain.eval.row import RowEvaluator
from retain.methods.base import Context, Plugin, StepOutputs, overrides
from retain.methods.registry import build_plugins
from retain.models.hidden import projects_kept_positions
from retain.models.sharding import gathered
from retain.progress import progress
from retain.storage.examples import ExampleResults
from retain.storage.trackers import Trackers, check_tracker
from retain.train import fsdp  # retain's own FSDP2 (train.sharding=fsdp2)
from retain.train.batches import StepPlan, StepPlanner, task_planner
from retain.train.devices import cpu_only, mixed_precision, reset_peak_memory
from retain.train.distributed import (
    check_process_count,
    global_view,
    plugin_state_digests,
)
from retain.train.evaluation import evaluate_stage, export_adapter, score_examples
from retain.train.optim import new_optimizer
from retain.train.outcome import final_metrics
from retain.train.records import step_record, task_end_record
from retain.train.resume import (
    load_resume_state,
    open_run_dir,
    restore_rng,
    save_state,
    write_fingerprint,
)
from retain.train.step import LossScales, accumulate_gradients, forward, stop_if_non_finite


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    resumed: bool


class ContinualTrainer:
    """Owns one run: model, data, plugins, the score matrix and the run directory."""

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
        from retain.data.streams import load_stream
        from retain.eval.matrix import ScoreMatrix
        from retain.models.adapters import prepare_for_finetuning
        from retain.models.loading import load_backbone
        from retain.storage.rundir import RunLog

        self.config = config
        self.run_dir = config.run_dir
        self.fingerprint: dict[str, Any] | None = None  # of the encoded data, see resume.py
        # Accumulation is done by the loop (it knows the answer tokens of the whole step), so
        # accelerate is not told about it: its backward would divide the loss a second time.
        report_to = None if config.train.report_to == "none" else config.train.report_to
        check_tracker(config.train.report_to)  # refused before the run directory is touched
        self.plugins: list[Plugin] = build_plugins(config)
        # adapter methods freeze some of their parameters per task: DDP must expect that
        unused = any(p.ddp_find_unused_parameters for p in self.plugins)
        self.accelerator = accelerator or Accelerator(
            mixed_precision=mixed_precision(config),
            cpu=cpu_only(),
            log_with=report_to,
            project_dir=str(self.run_dir / "trackers"),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)]
            if unused
            else None,
        )
        check_process_count(self.accelerator)
        # locked for the life of the run; resumed, cleared or refused before anything is written
        self._lock = open_run_dir(config, overwrite, self.accelerator)
        set_seed(config.seed)
        self.device = self.accelerator.device
        # "process" where the peak could not be reset: it may then include earlier runs' peaks
        self.peak_memory_scope = "run" if reset_peak_memory(self.device) else "process"
        self.stream = stream if stream is not None else load_stream(config.data)
        if model is None:
            model, tokenizer = load_backbone(config.model, self.device)
        assert tokenizer is not None, "a tokenizer must come with a given model"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer
        backbone = list(model.parameters())  # held only to tell which ones stay frozen
        model = prepare_for_finetuning(model, config.model)
        self.store = SampleStore()
        self.truncated_train: dict[str, int] = {}
        task_samples = self._encode_training_data(self.stream)
        self.context_length = model_context_length(model)
        self.evaluator = RowEvaluator(config, self.stream, tokenizer, self.context_length)
        self.probe_sets: dict[tuple[str, int], EncodedEvalSet] = {}
        self.is_main = self.accelerator.is_main_process
        self.trackers = Trackers(
            self.accelerator, report_to is not None, config.name, config.model_dump(mode="json")
        )
        self.log = RunLog(self.run_dir / "log.jsonl", enabled=self.is_main, sink=self.trackers)
        self.ctx = Context(
            config=config,
            stream=self.stream,
            store=self.store,
            task_samples=task_samples,
            device=self.device,
            tokenizer=tokenizer,
            log_event=self.log.write,
            score_examples=partial(score_examples, self),
            autocast=self.accelerator.autocast,
        )
        for plugin in self.plugins_with("wrap_model"):
            model = plugin.wrap_model(self.ctx, model)
        if config.train.sharding == fsdp.FSDP_SHARDING:
            if accelerator is not None:
                raise ConfigError(
                    "train.sharding=fsdp2 shards in retain's own loop; under a Trainer use its "
                    "own FSDP settings (TrainingArguments.fsdp) and leave train.sharding at none"
                )
            self.model = fsdp.shard_model(model, self.accelerator, self.plugins)
        else:
            self.model = model if accelerator is not None else self.accelerator.prepare(model)
        self.ctx.model = self.model
        self.ctx.bind_model(  # the plugin context's model services (methods/services.py)
            self.accelerator.unwrap_model(self.model), backbone, forward,
            int(tokenizer.pad_token_id), projects_kept_positions(self.model),
        )
        del backbone
        self.matrix = ScoreMatrix(
            self.stream.task_names, self.evaluator.general_names, cells=config.eval.cells
        )
        norm, score = config.eval.loglik_norm, config.eval.score
        for task in self.stream.tasks:
            self.matrix.score_types[task.name] = score_type(task, norm, score)
            self.matrix.decoding[task.name] = decoding_settings(task, norm, score)
        self.examples = ExampleResults()
        self.ties: dict[str, dict[str, int]] = {}  # task -> stage -> examples with tied options
        self.needs_hidden = any(p.needs_hidden_states for p in self.plugins)
        self.full_logits = any(p.needs_logits for p in self.plugins) or not (
            projects_kept_positions(self.model)
        )
        """Whether the training forward projects every position onto the vocabulary."""
        self.hidden_source: torch.nn.Module | None = None
        """The decoder stack whose last hidden state `StepOutputs.final_hidden` carries."""
        if self.needs_hidden:
            from retain.models.hidden import decoder_module

            self.hidden_source = decoder_module(self.accelerator.unwrap_model(self.model))
        self.optimizer: Any = None
        self.scheduler: Any = None

    # ----------------------------------------------------------------- set-up helpers
    def plugins_with(self, hook: str) -> list[Plugin]:
        """The plugins that implement `hook`, in composition order."""
        return [p for p in self.plugins if overrides(p, hook)]

    def _encode_training_data(self, stream: TaskStream) -> list[list[int]]:
        """Tokenise every training sample once; an answer that cannot fit stops the run here,
        before any training, and prompts cut to fit are counted per task."""
        pools = []
        for t, task in enumerate(stream.tasks):
            ids, cut = [], 0
            for i, ex in enumerate(task.train):
                enc = encode_train_example(
                    self.tokenizer, ex, self.config.data.max_length, task=task.name, index=i
                )
                cut += int(enc.truncated)
                ids.append(self.store.add(enc.input_ids, enc.labels, t))
            self.truncated_train[task.name] = cut
            pools.append(ids)
        return pools

    def reserved_rows(self) -> int:
        """Rows of every global batch that plugins fill themselves (`compose_step`)."""
        return sum(p.reserved_rows(self.ctx) for p in self.plugins_with("compose_step"))

    def steps_for(self, pool_size: int, budget: TaskBudget | None = None) -> int:
        """Optimizer steps of a task: its own budget from the stream file, else train.*; an
        epoch is one pass over the pool, so rows reserved by plugins do not count."""
        tc = self.config.train
        per_step = tc.batch_size * tc.grad_accum * self.accelerator.num_processes
        per_step -= self.reserved_rows()
        return task_steps(
            budget or TaskBudget(), tc.steps_per_task, tc.epochs_per_task, pool_size, per_step
        )

    # Evaluation rows, probe scoring and adapter export: train/evaluation.py.

    # ----------------------------------------------------------------- checkpoints
    # What a checkpoint holds and when a resume is refused: train/resume.py.
    def save(self, task: int, step: int, phase: str) -> None:
        save_state(self, task, step, phase)

    def close(self) -> None:
        """Release the run directory's lock (also released when the process ends)."""
        self._lock.release()

    # ----------------------------------------------------------------- training
    def _new_optimizer(self, steps: int, lr: float) -> None:
        self.optimizer, self.scheduler = new_optimizer(
            self.model, self.accelerator, self.config.train, steps, lr
        )

    def begin_task(self, t: int) -> tuple[list[int], int]:
        """A task's training pool (after `task_data`) and optimizer steps; `on_task_start` runs."""
        task = self.stream.tasks[t]
        ctx = self.ctx
        pool = list(ctx.task_samples[t])
        for plugin in self.plugins_with("task_data"):
            pool = plugin.task_data(ctx, t, pool)
        if not pool:
            raise ValueError(f"task {task.name!r} has no training samples")
        steps = self.steps_for(len(pool), task.budget)
        ctx.task_index, ctx.steps_in_task, ctx.task_step = t, steps, 0
        for plugin in self.plugins_with("on_task_start"):
            plugin.on_task_start(ctx, task)
        return pool, steps

    def planner_for(self, t: int, pool: list[int]) -> StepPlanner:
        """The same global order on every rank (see train/batches.py)."""
        tc = self.config.train
        return task_planner(
            self.store, pool, self.config.seed, t, self.ctx,
            tc.batch_size * self.accelerator.num_processes, tc.grad_accum,
            self.plugins_with("compose_batch"), self.plugins_with("compose_step"),
            self.reserved_rows(),
        )

    def end_step(
        self,
        t: int,
        steps: int,
        plan: StepPlan,
        micro: list[tuple[Batch, StepOutputs]],
        step_losses: dict[str, Any],
        step_start: float,
    ) -> float | None:
        """After the optimizer step: counters, `after_step` on the global view, the step's log
        record (every `train.log_every`); returns the logged loss, or None."""
        ctx, tc = self.ctx, self.config.train
        pad_id = int(self.tokenizer.pad_token_id)
        ctx.task_step += 1
        ctx.global_step += 1
        after = self.plugins_with("after_step")
        for batch, outputs in global_view(self.accelerator, plan, micro, self.store, pad_id):
            for plugin in after:
                plugin.after_step(ctx, batch, outputs)
        tokens, samples, replayed = plan.tokens, plan.samples, plan.replayed  # global
        ctx.count("samples", samples)
        ctx.count("tokens", tokens)
        ctx.count("replayed_rows", replayed)
        if plan.general_rows:
            ctx.count("general_rows", plan.general_rows)
        seconds = time.perf_counter() - step_start
        if not (ctx.task_step % tc.log_every == 0 or ctx.task_step == steps):
            return None
        return step_record(self, t, plan, step_losses, seconds)

    def end_task(self, t: int, steps: int, task_start: float, task_cpu: float) -> None:
        """`on_task_end`, the ranks' plugin digests and the task's cost record."""
        task, ctx = self.stream.tasks[t], self.ctx
        for plugin in self.plugins_with("on_task_end"):
            plugin.on_task_end(ctx, task)
        if self.accelerator.num_processes > 1:  # every rank must hold the same plugin state
            with gathered(self.model):  # plugin tensors that live in the model, whole
                digests = plugin_state_digests(self.accelerator, self.plugins)
            self.log.write({"type": "rank_state", "task": t, "plugin_digests": digests})
            if len(set(digests)) != 1:
                raise RuntimeError(f"plugin states differ across ranks after task {task.name}")
        task_end_record(self, t, steps, task_start, task_cpu)

    def train_task(self, t: int, start_step: int, resume_state: dict[str, Any] | None) -> None:
        task = self.stream.tasks[t]
        tc = self.config.train
        ctx = self.ctx
        pool, steps = self.begin_task(t)
        self._new_optimizer(steps, task_lr(task.budget, tc.lr))
        if resume_state is not None:
            fsdp.load_optimizer_state(self.model, self.optimizer, resume_state["optimizer"])
            self.scheduler.load_state_dict(resume_state["scheduler"])
            restore_rng(self, resume_state)  # plugins were restored before on_task_start
            ctx.task_step = start_step
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        planner = self.planner_for(t, pool)
        lossers = self.plugins_with("extra_loss")
        pad_id = int(self.tokenizer.pad_token_id)
        self.model.train()
        task_start, task_cpu = time.perf_counter(), time.process_time()
        bar = progress(
            steps, f"task {t + 1}/{len(self.stream)} {task.name}", tc.progress, start_step
        )
        for step in range(start_step, steps):
            step_start = time.perf_counter()
            plan = planner.plan(step)
            batches = [collate(self.store, p, pad_id) for p in plan.local(rank, world)]
            scales = LossScales.of(plan, world)  # see train/step.py
            step_losses, micro = accumulate_gradients(self, batches, scales, lossers)
            fsdp.sync_replicated_grads(self.model)  # sharded runs only
            stop_if_non_finite(self, step_losses, t, task_lr(task.budget, tc.lr))
            if tc.max_grad_norm is not None:
                self.accelerator.clip_grad_norm_(self.model.parameters(), tc.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            loss_value = self.end_step(t, steps, plan, micro, step_losses, step_start)
            if loss_value is not None:
                bar.set_postfix(loss=f"{loss_value:.3f}")
            bar.update(1)
            every = tc.checkpoint_every
            if every and ctx.task_step % every == 0 and ctx.task_step < steps:
                self.save(t, ctx.task_step, "train")
        bar.close()
        self.end_task(t, steps, task_start, task_cpu)

    def run(self) -> RunResult:
        # restored from the newest intact checkpoint (data fingerprint checked), or None
        state = load_resume_state(self)
        resumed = state is not None
        if state is None:
            self.log.truncate(0)
            from retain.storage.files import write_json
            from retain.storage.rundir import environment

            if self.is_main:
                write_json(self.run_dir / "environment.json", environment(self.device))
            write_fingerprint(self)
            for plugin in self.plugins_with("on_stream_start"):
                plugin.on_stream_start(self.ctx)
            with gathered(self.model):  # whole weights: ranks score different examples
                evaluate_stage(self, 0)
            self.save(-1, 0, "done")
            state = {"position": {"task": -1, "step": 0, "phase": "done"}}
        pos = state["position"]
        first = pos["task"] + 1 if pos["phase"] == "done" else pos["task"]
        for t in range(first, len(self.stream)):
            mid_task = pos["phase"] == "train" and t == pos["task"]
            self.train_task(t, pos["step"] if mid_task else 0, state if mid_task else None)
            with gathered(self.model):
                evaluate_stage(self, t + 1)
            export_adapter(self, t)
            self.save(t, 0, "done")
        return RunResult(self.run_dir, self.finish(), resumed)

    def finish(self) -> dict[str, Any]:
        """metrics.json (what it holds: train/outcome.py) and the report."""
        from retain.results.report import write_report
        from retain.storage.files import write_json

        metrics = final_metrics(self)
        for text in metrics["warnings"]:
            self.log.write({"type": "warning", "message": text})
            if self.is_main:
                print(f"warning: {text}", file=sys.stderr)
        self.log.close()
        self.trackers.final(metrics)
        if self.is_main:
            write_json(self.run_dir / "metrics.json", metrics)
            write_report(self.run_dir)
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
