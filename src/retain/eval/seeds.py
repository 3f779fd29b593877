"""Seeds of one configuration from their metric values alone, and the small-test-set warning.

Without per-example results only the spread over seeds is known: the interval is
`stats.estimate`'s t-interval over seeds. With per-example results, `retain bench` uses the
crossed seed × example estimator (`bench/aggregate.py`, same function).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import numpy as np

from retain.eval.stats import check_level, estimate, t_quantile
from retain.eval.uncertainty import NOISE_MIN_EXAMPLES, point_metrics
from retain.storage.examples import ExampleResults

_NOT_METRICS = frozenset({"num_tasks", "last_stage", "complete"})


class SeedSummary(TypedDict):
    mean: float
    low: float | None
    high: float | None
    std: float | None
    n_seeds: int


def _scalars(run: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in run.items():
        if key in _NOT_METRICS:
            continue
        if isinstance(value, Mapping):
            value = value.get("value", value.get("mean"))
        if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
            continue
        if math.isfinite(float(value)):
            out[key] = float(value)
    return out


def combine_seeds(
    runs: Sequence[Mapping[str, Any] | ExampleResults],
    level: float = 0.95,
    task_names: Sequence[str] | None = None,
    general_names: Sequence[str] = (),
) -> dict[str, SeedSummary]:
    """Mean and t-interval over seeds of one configuration, per scalar metric.

    Runs are metric dicts (`compute_metrics`, `bootstrap_metrics`) or per-example results
    (then `task_names` is needed). A t-interval, not a bootstrap over seeds: with the usual 3–5
    seeds a bootstrap has only a handful of distinct resamples and gives intervals that are too
    narrow, while the t quantile accounts for the few degrees of freedom. A metric is combined
    over the runs that define it; `n_seeds` says how many, and below 2 there is no interval.
    """
    check_level(level)
    dicts = []
    for run in runs:
        if isinstance(run, ExampleResults):
            if task_names is None:
                raise ValueError("task_names is needed to combine per-example results")
            run = point_metrics(run, task_names, general_names)
        dicts.append(_scalars(run))
    keys = list(dict.fromkeys(k for d in dicts for k in d))
    out: dict[str, SeedSummary] = {}
    for key in keys:
        est = estimate([d[key] for d in dicts if key in d], level=level)
        out[key] = SeedSummary(mean=est.mean, low=est.low, high=est.high, std=est.seed_sd,
                               n_seeds=est.n_seeds)  # fmt: skip
    return out


__all__ = ["SeedSummary", "combine_seeds", "noise_note", "t_quantile"]


def noise_note(
    n_per_task: Mapping[str, int] | Sequence[int] | int, threshold: int = NOISE_MIN_EXAMPLES
) -> str | None:
    """The plain warning a report must show when any task has fewer than `threshold` test
    examples (one example then moves a score by more than 2 points), else None."""
    if isinstance(n_per_task, Mapping):
        counts = [(str(k), int(v)) for k, v in n_per_task.items()]
    elif isinstance(n_per_task, int):
        counts = [("", n_per_task)]
    else:
        counts = [("", int(v)) for v in n_per_task]
    small = [(name, n) for name, n in counts if n < threshold]
    if not small:
        return None
    fewest = min(n for _, n in small)
    names = ", ".join(name for name, _ in small if name)
    where = f" ({names})" if names else ""
    step = f"by {100.0 / fewest:.1f} points" if fewest > 0 else "arbitrarily (no examples)"
    return (
        f"Fewer than {threshold} test examples per task{where}, as few as {fewest}: one example "
        f"moves a task score {step}, so differences of a few points are noise."
    )
