"""When replay happens: fixed, loss-triggered, accuracy-triggered and MSSR's expanding schedule.

Every trigger describes the replay steps of the current task as *windows* `[start, end)` of
task-step indices (step i is the (i+1)-th optimizer step of the task). Schedules are written in
*units* of `unit_steps` optimizer steps and restart at each task.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

from retain.methods.replay.config import ReplayConfig

Window = tuple[int, int]


def unit_steps_for(config: ReplayConfig, steps_in_task: int) -> int:
    """Steps per unit.

    Decision (docs/methods/replay.md): `max(1, round(unit_fraction × steps_in_task))` — the
    paper's 100 steps of a 2000-step stage — so schedules scale with the task length;
    `unit_steps` fixes it instead.
    """
    if config.unit_steps is not None:
        return int(config.unit_steps)
    return max(1, round_half_up(config.unit_fraction * steps_in_task))


def round_half_up(x: float) -> int:
    """Decision: halves round up (Python's `round` rounds 2.5 to 2, which surprises readers)."""
    return int(math.floor(x + 0.5 + 1e-9))


def units_to_steps(units: float, unit_steps: int) -> int:
    return max(0, round_half_up(units * unit_steps))


def expanding_event_times(first: float, eta_p: float, rho_p: float, until: float) -> list[float]:
    """Event times (units from task start) of MSSR's expanding schedule, all below `until`.

    Δ_1 = first, Δ_{k+1} = Δ_k (1 + η_p e^{−ρ_p k}); event k is at Δ_1 + … + Δ_k
    (defaults: 1, 2.48, 4.62, 7.68, 12.0, 18.0, …).
    """
    times: list[float] = []
    delta, t, k = first, 0.0, 1
    while True:
        t += delta
        if t >= until:
            return times
        times.append(t)
        delta *= 1.0 + eta_p * math.exp(-rho_p * k)
        k += 1


def replay_fraction(t: float, lam0: float, lam_min: float, beta_r: float) -> float:
    """λ(t) = λ_min + (λ_0 − λ_min) e^{−β_r t}, t in optimizer steps.

    Decision: t is the run's global step (not the task step), so λ decays slowly over the
    whole stream; with β_r = 1e−5 a per-task clock would leave λ practically constant.
    """
    return lam_min + (lam0 - lam_min) * math.exp(-beta_r * t)


def replay_rows(lam: float, batch_size: int) -> int:
    """Rows of a batch replaced by replay: round(λ·B), at least 1 when λ > 0, at most B."""
    if lam <= 0 or batch_size <= 0:
        return 0
    return min(batch_size, max(1, round_half_up(lam * batch_size)))


def merge_windows(windows: list[Window]) -> list[Window]:
    """Sorted, non-overlapping windows (overlapping events merge into one)."""
    merged: list[Window] = []
    for start, end in sorted(w for w in windows if w[1] > w[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


class Trigger:
    """The replay windows of the current task; subclasses decide where they fall."""

    kind = "trigger"

    def __init__(self, event_units: float) -> None:
        self.event_units = event_units
        self.windows: list[Window] = []
        self.steps_in_task = 0
        self.unit_steps = 1

    @property
    def event_steps(self) -> int:
        """An event lasts `event_units` units (at least one step)."""
        return max(1, units_to_steps(self.event_units, self.unit_steps))

    def start_task(self, steps_in_task: int, unit_steps: int) -> None:
        self.steps_in_task = steps_in_task
        self.unit_steps = unit_steps
        self.windows = []

    def active(self, step: int) -> Window | None:
        """The window containing task step `step`, if any."""
        i = bisect.bisect_right(self.windows, (step, math.inf)) - 1
        if i >= 0 and self.windows[i][0] <= step < self.windows[i][1]:
            return self.windows[i]
        return None

    def _open(self, step: int) -> Window | None:
        end = min(step + self.event_steps, self.steps_in_task)
        if end <= step:
            return None
        window = (step, end)
        self.windows.append(window)
        return window

    def state_dict(self) -> dict[str, Any]:
        return {
            "windows": [list(w) for w in self.windows],
            "steps_in_task": self.steps_in_task,
            "unit_steps": self.unit_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.windows = [(int(a), int(b)) for a, b in state["windows"]]
        self.steps_in_task = int(state["steps_in_task"])
        self.unit_steps = int(state["unit_steps"])


class FixedSchedule(Trigger):
    """`fixed`: an event every `interval_units` units; 0 means every step is a replay step.

    Decision: like MSSR's schedule, the first event comes one interval after the task starts
    (units 3, 6, 9, … with the defaults), restarting at each task.
    """

    kind = "fixed"

    def __init__(self, interval_units: float, event_units: float) -> None:
        super().__init__(event_units)
        self.interval_units = interval_units

    def start_task(self, steps_in_task: int, unit_steps: int) -> None:
        super().start_task(steps_in_task, unit_steps)
        if self.interval_units == 0:
            self.windows = [(0, steps_in_task)] if steps_in_task > 0 else []
            return
        windows, k = [], 1
        while (start := units_to_steps(k * self.interval_units, unit_steps)) < steps_in_task:
            windows.append((start, min(start + self.event_steps, steps_in_task)))
            k += 1
        self.windows = merge_windows(windows)


class ExpandingSchedule(Trigger):
    """MSSR's scheduler: events at expanding intervals (1, 2.48, 4.62, … units), per task."""

    kind = "expanding"

    def __init__(self, first: float, eta_p: float, rho_p: float, event_units: float) -> None:
        super().__init__(event_units)
        self.first, self.eta_p, self.rho_p = first, eta_p, rho_p

    def event_times(self, steps_in_task: int, unit_steps: int) -> list[float]:
        return expanding_event_times(
            self.first, self.eta_p, self.rho_p, until=steps_in_task / unit_steps
        )

    def start_task(self, steps_in_task: int, unit_steps: int) -> None:
        super().start_task(steps_in_task, unit_steps)
        windows = []
        for t in self.event_times(steps_in_task, unit_steps):
            start = units_to_steps(t, unit_steps)
            if start < steps_in_task:
                windows.append((start, min(start + self.event_steps, steps_in_task)))
        self.windows = merge_windows(windows)


class LossTrigger(Trigger):
    """`loss_triggered`: start an event when the loss exceeds (1 + δ) × its EMA.

    Decisions: the loss of a step is the mean per-sample loss of its task (non-replay) rows, so
    replay rows do not feed the signal; it is compared with the EMA of the *previous* steps,
    then folded in; the EMA runs across tasks (the jump at a task switch is the kind of spike
    this baseline reacts to); "no event in the last unit" means no replay step in the last
    `unit_steps` steps (a cool-down after each event).
    """

    kind = "loss"

    def __init__(self, decay: float, delta: float, event_units: float) -> None:
        super().__init__(event_units)
        self.decay, self.delta = decay, delta
        self.ema: float | None = None

    def observe(self, step: int, loss: float, can_start: bool = True) -> Window | None:
        """`step` completed steps of the task so far; returns the window it opened, if any."""
        if not math.isfinite(loss):
            return None
        if self.ema is None:
            self.ema = loss
            return None
        fire = loss > (1.0 + self.delta) * self.ema
        self.ema = self.decay * self.ema + (1.0 - self.decay) * loss
        last_end = self.windows[-1][1] if self.windows else None
        cooled = last_end is None or last_end <= step - self.unit_steps
        if fire and can_start and cooled:
            return self._open(step)
        return None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "ema": self.ema}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.ema = None if state["ema"] is None else float(state["ema"])


class AccuracyTrigger(Trigger):
    """`accuracy_triggered`: probe finished tasks every unit; a drop > `drop` points starts one.

    Decisions: a task's best starts with its probe score at its own task end (the plugin probes
    it then), so a drop is measured from what was learned; a new event never starts inside an
    active one; scores are 0–100 points.
    """

    kind = "accuracy"

    def __init__(self, probe_every_units: float, drop: float, event_units: float) -> None:
        super().__init__(event_units)
        self.probe_every_units, self.drop = probe_every_units, drop
        self.best: dict[int, float] = {}
        self.last_probe = -1

    @property
    def probe_steps(self) -> int:
        return max(1, units_to_steps(self.probe_every_units, self.unit_steps))

    def start_task(self, steps_in_task: int, unit_steps: int) -> None:
        super().start_task(steps_in_task, unit_steps)
        self.last_probe = -1

    def probe_due(self, step: int) -> bool:
        """After `step` completed steps: a probe every `probe_steps`, once per step."""
        return step > 0 and step % self.probe_steps == 0 and step != self.last_probe

    def set_best(self, task: int, score: float) -> None:
        self.best[task] = max(score, self.best.get(task, -math.inf))

    def observe(
        self, step: int, scores: dict[int, float], can_start: bool = True
    ) -> tuple[list[int], Window | None]:
        """Probe scores after `step` steps: (tasks that dropped, window opened or None)."""
        self.last_probe = step
        dropped = []
        for task, score in scores.items():
            if task in self.best and self.best[task] - score > self.drop:
                dropped.append(task)
            self.set_best(task, score)
        if dropped and can_start and self.active(step) is None:
            return dropped, self._open(step)
        return dropped, None

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "best": {str(t): s for t, s in self.best.items()},
            "last_probe": self.last_probe,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.best = {int(t): float(s) for t, s in state["best"].items()}
        self.last_probe = int(state["last_probe"])
