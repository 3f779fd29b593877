"""`ReplayPlugin`: a trigger (when to replay) composed with a sampler (what to replay).

| method               | trigger                        | sampler          | λ             |
|----------------------|--------------------------------|------------------|---------------|
| `fixed`              | every `interval_units` units   | uniform          | `replay.lam`  |
| `loss_triggered`     | loss spike over its EMA        | uniform          | `replay.lam`  |
| `accuracy_triggered` | probe drop on a finished task  | uniform          | `replay.lam`  |
| `mssr_spl`           | every `interval_units` units   | memory m^(−ζ)    | λ(t)          |
| `mssr_sch`           | expanding schedule             | uniform          | λ(t)          |
| `mssr`               | expanding schedule             | memory m^(−ζ)    | λ(t)          |

Replay replaces the last rows of the task batch, so every method runs the same number of
optimizer steps on batches of the same size (the paper's fairness rule).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from retain.config_sections import CoreConfig
from retain.data.encoding import Batch, BatchPlan
from retain.methods.base import Context, Plugin, StepOutputs
from retain.methods.names import REPLAY_METHODS
from retain.methods.replay.buffer import ReplayBuffer
from retain.methods.replay.memory import MemoryState
from retain.methods.replay.schedule import (
    AccuracyTrigger,
    ExpandingSchedule,
    FixedSchedule,
    LossTrigger,
    Trigger,
    replay_fraction,
    replay_rows,
    unit_steps_for,
)

if TYPE_CHECKING:
    from retain.data.task import Example, Task

BUFFER_SEED_TAG = 0x42554646
"""Seed stream of the buffer's fill/evict generator. Decision: it depends on the run seed only,
so every replay method of a run with the same seed holds the very same buffer samples."""
SAMPLER_SEED_TAG = 0x53414D50


class ReplayPlugin(Plugin):
    """Experience replay with a pluggable trigger and a uniform or memory-aware sampler.

    Hook use: `on_task_start` sets the task's unit and windows (and tracks the task's samples
    for MSSR); `compose_batch` swaps the last round(λB) rows for buffer samples inside an event;
    `after_step` feeds the per-sample losses to MSSR's memory and to the loss trigger, and runs
    the accuracy probes; `on_task_end` admits the finished task to the buffer.
    Decision: no replay during the first task (the buffer is empty until a task has ended).
    """

    def __init__(
        self,
        config: CoreConfig,
        method: str,
        trigger: Trigger,
        memory_sampler: bool,
        adaptive_lam: bool,
    ) -> None:
        super().__init__(config)
        self.name = method
        self.trigger = trigger
        self.adaptive_lam = adaptive_lam
        self.buffer = ReplayBuffer(config.replay.buffer_size, [config.seed, BUFFER_SEED_TAG])
        self.rng = np.random.default_rng([config.seed, SAMPLER_SEED_TAG])
        self.memory: MemoryState | None = MemoryState(config.mssr) if memory_sampler else None
        self.task_index = -1
        self.in_task = False
        self.unit_steps = 1
        self.units_before_task = 0.0
        """Run-wide clock: units of all finished tasks (a unit's length differs per task)."""
        self.event: dict[str, Any] | None = None
        self.pending_loss = [0.0, 0.0, 0]  # task-row loss sum, task rows, micro-batches seen
        self.probe_fallback_logged: list[int] = []

    # ---------------------------------------------------------------- time
    def now_units(self, ctx: Context) -> float:
        """The run-wide clock in units at the current task step."""
        return self.units_before_task + ctx.task_step / self.unit_steps

    def current_lam(self, ctx: Context) -> float:
        if self.adaptive_lam:
            m = self.config.mssr
            return replay_fraction(ctx.global_step, m.lam0, m.lam_min, m.beta_r)
        return self.config.replay.lam

    # ---------------------------------------------------------------- hooks
    def on_task_start(self, ctx: Context, task: Task) -> None:
        """Set the unit and this task's windows; resuming mid-task keeps the restored state."""
        if self.in_task and self.task_index == ctx.task_index:
            return
        if isinstance(self.trigger, AccuracyTrigger) and ctx.score_examples is None:
            raise RuntimeError("accuracy_triggered needs ctx.score_examples to probe tasks")
        self.task_index = ctx.task_index
        self.in_task = True
        self.unit_steps = unit_steps_for(self.config.replay, ctx.steps_in_task)
        self.trigger.start_task(ctx.steps_in_task, self.unit_steps)
        self.event = None
        self.pending_loss = [0.0, 0.0, 0]
        if self.memory is not None:
            self.memory.ensure_size(len(ctx.store))
            self.memory.track(self._own_samples(ctx, ctx.task_index))

    def compose_batch(self, ctx: Context, plan: BatchPlan) -> BatchPlan:
        if len(self.buffer) == 0:
            return plan
        window = self.trigger.active(ctx.task_step)
        if window is None:
            return plan
        if self.event is None or tuple(self.event["window"]) != window:
            self._begin_event(ctx, window)
        assert self.event is not None
        n = min(replay_rows(self.event["lam"], len(plan.sample_ids)), len(self.buffer))
        if n == 0:
            return plan
        weights = None
        if self.memory is not None:
            weights = self.memory.probabilities(self.buffer.ids)
        drawn = self.buffer.draw(n, self.rng, weights)
        keep = len(plan.sample_ids) - n
        if any(plan.is_replay) or any(ctx.store.task_of[i] < 0 for i in plan.sample_ids):
            return self._replace_task_rows(ctx, plan, [int(i) for i in drawn])
        return BatchPlan(
            sample_ids=list(plan.sample_ids[:keep]) + [int(i) for i in drawn],
            is_replay=list(plan.is_replay[:keep]) + [True] * n,
        )

    @staticmethod
    def _replace_task_rows(ctx: Context, plan: BatchPlan, drawn: list[int]) -> BatchPlan:
        """Replay into the last rows of the current task only, so rows another plugin placed
        (GeRe's general text, flagged replay or `task_of` -1) stay where they were."""
        ids, flags = list(plan.sample_ids), list(plan.is_replay)
        free = [r for r in range(len(ids)) if not flags[r] and ctx.store.task_of[ids[r]] >= 0]
        for r, sample in zip(free[max(len(free) - len(drawn), 0) :], drawn, strict=False):
            ids[r], flags[r] = sample, True
        return BatchPlan(ids, flags)

    def _begin_event(self, ctx: Context, window: tuple[int, int]) -> None:
        lam = self.current_lam(ctx)
        self.event = {"window": list(window), "lam": lam}
        self.buffer.start_event()
        if self.memory is not None:
            self.memory.refresh(self.now_units(ctx))
        ctx.log_event(
            {
                "type": "replay_event",
                "task": ctx.task_index,
                "step": ctx.global_step,
                "task_step": ctx.task_step,
                "lam": lam,
                "units": (window[1] - window[0]) / self.unit_steps,
                "at_units": window[0] / self.unit_steps,
                "steps": window[1] - window[0],
                "method": self.name,
                "trigger": self.trigger.kind,
            }
        )

    def after_step(self, ctx: Context, batch: Batch, outputs: StepOutputs) -> None:
        needs_losses = self.memory is not None or isinstance(self.trigger, LossTrigger)
        if needs_losses:
            losses = outputs.per_sample_loss.detach().float().cpu().numpy().astype(np.float64)
            is_replay = batch.is_replay.cpu().numpy().astype(bool)
            if self.memory is not None:
                now = self.now_units(ctx)
                self.memory.observe(batch.sample_ids.cpu().numpy(), losses, now)
                if self.memory.refresh_due(now):
                    self.memory.refresh(now)
            if isinstance(self.trigger, LossTrigger):  # the current task's rows only
                task_rows = ~is_replay & (batch.task_ids.cpu().numpy() >= 0)
                self._observe_loss(ctx, losses[task_rows])
        if isinstance(self.trigger, AccuracyTrigger) and self.trigger.probe_due(ctx.task_step):
            self._probe(ctx)

    def _observe_loss(self, ctx: Context, task_losses: np.ndarray) -> None:
        """Aggregate the micro-batches of one optimizer step, then feed the loss trigger."""
        assert isinstance(self.trigger, LossTrigger)
        self.pending_loss[0] += float(task_losses.sum())
        self.pending_loss[1] += float(task_losses.size)
        self.pending_loss[2] += 1
        if self.pending_loss[2] < self.config.train.grad_accum:
            return
        total, rows, _ = self.pending_loss
        self.pending_loss = [0.0, 0.0, 0]
        if rows == 0:
            return
        self.trigger.observe(ctx.task_step, total / rows, can_start=len(self.buffer) > 0)

    def _probe_examples(self, ctx: Context, task_index: int) -> list[Example]:
        """The probe set of a task: its held-out `valid` split, never its test split.

        Decision: a task without a valid split is probed on its first `probe_size` train
        examples (logged once per task), which overstates retention but never leaks test data.
        """
        task = ctx.stream.tasks[task_index]
        size = self.config.replay.probe_size
        if task.valid:
            return task.valid[:size]
        if task_index not in self.probe_fallback_logged:
            self.probe_fallback_logged.append(task_index)
            ctx.log_event(
                {
                    "type": "replay_probe_fallback",
                    "task": task_index,
                    "step": ctx.global_step,
                    "reason": f"task {task.name!r} has no valid split; probing its first "
                    f"{size} train examples",
                }
            )
        return task.train[:size]

    def _score(self, ctx: Context, task_index: int) -> float:
        assert ctx.score_examples is not None
        examples = self._probe_examples(ctx, task_index)
        if not examples:
            return float("nan")
        scores = ctx.score_examples(ctx.stream.tasks[task_index], examples)
        return 100.0 * float(np.mean(scores))

    def _probe(self, ctx: Context) -> None:
        assert isinstance(self.trigger, AccuracyTrigger)
        finished = sorted(int(t) for t in self.buffer.by_task)
        if not finished:
            return
        scores = {t: self._score(ctx, t) for t in finished}
        scores = {t: s for t, s in scores.items() if np.isfinite(s)}
        dropped, window = self.trigger.observe(ctx.task_step, scores)
        ctx.log_event(
            {
                "type": "replay_probe",
                "task": ctx.task_index,
                "step": ctx.global_step,
                "task_step": ctx.task_step,
                "scores": {str(t): s for t, s in scores.items()},
                "best": {str(t): self.trigger.best[t] for t in scores},
                "dropped": dropped,
                "triggered": window is not None,
            }
        )

    def on_task_end(self, ctx: Context, task: Task) -> None:
        """Admit the finished task to the buffer (equal quotas, random, seeded)."""
        own = self._own_samples(ctx, ctx.task_index)
        last_task = ctx.task_index >= len(ctx.stream) - 1
        if isinstance(self.trigger, AccuracyTrigger) and not last_task:
            # its baseline best; the last task is never probed later, so it costs nothing
            score = self._score(ctx, ctx.task_index)
            if np.isfinite(score):
                self.trigger.set_best(ctx.task_index, score)
        added, evicted = self.buffer.add_task(ctx.task_index, own)
        if self.memory is not None:
            now = self.units_before_task + ctx.steps_in_task / self.unit_steps
            self.memory.refresh(now)
            self.memory.untrack(evicted)
            self.memory.untrack(np.setdiff1d(own, added))
            self.memory.start(added, now)
        self.units_before_task += ctx.steps_in_task / self.unit_steps
        self.event = None
        self.in_task = False

    @staticmethod
    def _own_samples(ctx: Context, task_index: int) -> np.ndarray:
        """The task's own training samples (another plugin may have widened the pool)."""
        pool = np.asarray(ctx.task_samples[task_index], dtype=np.int64)
        task_of = np.asarray(ctx.store.task_of, dtype=np.int64)
        return np.unique(pool[task_of[pool] == task_index]) if pool.size else pool

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "method": self.name,
            "buffer": self.buffer.state_dict(),
            "trigger": self.trigger.state_dict(),
            "rng": self.rng.bit_generator.state,
            "task_index": self.task_index,
            "in_task": self.in_task,
            "unit_steps": self.unit_steps,
            "units_before_task": self.units_before_task,
            "event": self.event,
            "pending_loss": list(self.pending_loss),
            "probe_fallback_logged": list(self.probe_fallback_logged),
        }
        if self.memory is not None:
            state["memory"] = self.memory.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["method"] != self.name:
            raise ValueError(f"checkpoint of {state['method']!r} cannot resume {self.name!r}")
        self.buffer.load_state_dict(state["buffer"])
        self.trigger.load_state_dict(state["trigger"])
        self.rng.bit_generator.state = state["rng"]
        self.task_index = int(state["task_index"])
        self.in_task = bool(state["in_task"])
        self.unit_steps = int(state["unit_steps"])
        self.units_before_task = float(state["units_before_task"])
        event = state["event"]
        self.event = (
            None
            if event is None
            else {
                "window": [int(v) for v in event["window"]],
                "lam": float(event["lam"]),
            }
        )
        total, rows, calls = state["pending_loss"]
        self.pending_loss = [float(total), float(rows), int(calls)]
        self.probe_fallback_logged = [int(t) for t in state["probe_fallback_logged"]]
        if self.memory is not None:
            self.memory.load_state_dict(state["memory"])


def build_replay_plugin(config: CoreConfig, method: str) -> Plugin | None:
    """The plugin of a replay method (`none` → None: sequential fine-tuning, no replay)."""
    if method == "none":
        return None
    if method not in REPLAY_METHODS:
        allowed = ", ".join(["none", *sorted(REPLAY_METHODS)])
        raise ValueError(f"{method!r} is not a replay method; allowed: {allowed}")
    r, m = config.replay, config.mssr
    trigger: Trigger
    if method in ("fixed", "mssr_spl"):
        trigger = FixedSchedule(r.interval_units, r.event_units)
    elif method == "loss_triggered":
        trigger = LossTrigger(r.loss_ema_decay, r.loss_delta, r.event_units)
    elif method == "accuracy_triggered":
        trigger = AccuracyTrigger(r.probe_every_units, r.probe_drop, r.event_units)
    else:
        trigger = ExpandingSchedule(m.first_interval_units, m.eta_p, m.rho_p, r.event_units)
    return ReplayPlugin(
        config,
        method,
        trigger,
        memory_sampler=method in ("mssr_spl", "mssr"),
        adaptive_lam=method.startswith("mssr"),
    )


__all__ = ["ReplayPlugin", "build_replay_plugin"]
