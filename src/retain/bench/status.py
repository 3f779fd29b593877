"""What a bench has left to do: each planned run's state and the CPU time the rest will take.

`retain bench ... --dry-run` prints it and runs nothing, so that a long bench, stopped and
resumed, can be planned before its processes start again. A run resumed from a checkpoint
counts at the share of its training steps still to do; the time of a run is the mean CPU time
of the bench's finished runs (`cost.cpu_seconds` read from their logs, so a run timed short by
an older resume does not count). Evaluation is counted as training is, by share: a rough
guide, not a measurement.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from retain.bench.plan import BenchPlan, BenchRun
from retain.bench.runner import Status, run_state


@dataclass(frozen=True)
class RunProgress:
    method: str
    seed: int
    status: Status
    """As `runner.run_state` judges it."""
    done: float
    """Share of the run's training steps done (1 when finished)."""
    detail: str = ""


def checkpoint_share(run: BenchRun) -> tuple[float, str]:
    """Share of the training done at the run's newest checkpoint, and where it stands."""
    from retain.train.checkpoint import LATEST, STATE
    from retain.train.resume import CHECKPOINTS
    from retain.train.state import Position

    path = run.run_dir / CHECKPOINTS / LATEST / STATE
    try:
        state = json.loads(path.read_text("utf-8"))
        pos = Position.from_state(state.get("position"))
    except (OSError, ValueError, AttributeError) as exc:  # StateFormatError is a ValueError
        return 0.0, f"from a checkpoint whose {path} cannot be read ({exc})"
    tasks = len(state.get("matrix", {}).get("tasks", [])) or None
    steps = run.config.train.steps_per_task
    if pos.phase == "done":
        where = "after the untouched model's row" if pos.task < 0 else f"after task {pos.task + 1}"
        done = pos.task + 1.0
    else:
        where = f"task {pos.task + 1} at step {pos.step}"
        done = pos.task + (pos.step / steps if steps else 0.0)
    return (min(1.0, done / tasks) if tasks else 0.0), where


def progress(plan: BenchPlan) -> list[RunProgress]:
    """Every planned run's state, judged as `retain bench` would before running it."""
    out = []
    for run in plan.runs:
        state = run_state(run)
        if state.status == "finished":
            out.append(RunProgress(run.method, run.seed, "finished", 1.0))
        elif state.status == "resume":
            done, where = checkpoint_share(run)
            out.append(RunProgress(run.method, run.seed, "resume", done, f"resumes {where}"))
        else:
            out.append(RunProgress(run.method, run.seed, state.status, 0.0, state.reason))
    return out


def bench_cpu_seconds(plan: BenchPlan) -> list[float]:
    """CPU time of every finished run of the bench folder (all its invocations: another seed's
    runs time this one's too), where known (`aggregate.load_run` reads it from the log)."""
    from retain.bench.aggregate import load_bench

    try:
        _, _, runs = load_bench(plan.root)
    except ValueError:  # no manifest yet: nothing has run
        return []
    costs = (run.metrics.get("cost") or {} for run in runs.values())
    return [float(c["cpu_seconds"]) for c in costs if c.get("cpu_seconds") is not None]


def status_lines(plan: BenchPlan) -> list[str]:
    """One line per run, then the CPU time left (where the bench's finished runs tell it)."""
    runs = progress(plan)
    lines = []
    for r in runs:
        text = {"finished": "finished", "resume": r.detail, "new": "not started",
                "changed": f"configuration changed ({r.detail}): runs again"}[r.status]
        lines.append(f"{r.method} (seed {r.seed}): {text}")
    timed = bench_cpu_seconds(plan)
    left = sum(1.0 - r.done for r in runs)
    if not left:
        lines.append("nothing left to run")
    elif timed:
        per_run = sum(timed) / len(timed)
        lines.append(
            f"left: {left:.2f} runs' worth of training, about {left * per_run / 3600:.1f} "
            f"CPU-hours at {per_run:.0f} CPU s a run (the mean of {len(timed)} finished)"
        )
    else:
        lines.append(f"left: {left:.2f} runs' worth of training (no finished run to time it)")
    return lines
