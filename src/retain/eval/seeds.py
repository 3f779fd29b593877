"""Seeds of one configuration: mean and t-interval over seeds, and the small-test-set warning.

Kept apart from the example bootstrap (`eval/uncertainty.py`): seeds vary the training, the
bootstrap varies the test examples; `retain bench` combines the two (`bench/aggregate.py`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import numpy as np

from retain.eval.uncertainty import NOISE_MIN_EXAMPLES, check_level, point_metrics
from retain.results.examples import ExampleResults

_NOT_METRICS = frozenset({"num_tasks", "last_stage", "complete"})


class SeedSummary(TypedDict):
    mean: float
    low: float | None
    high: float | None
    std: float | None
    n_seeds: int


def _t_coverage(theta: float, df: int) -> float:
    """P(|T| ≤ √df·tan θ) for Student's t with integer df (closed-form finite series)."""
    c2, s = math.cos(theta) ** 2, math.sin(theta)
    if df % 2:
        term = total = math.cos(theta)
        for k in range(1, (df - 1) // 2):
            term *= 2 * k / (2 * k + 1) * c2
            total += term
        return 2.0 / math.pi * (theta + (s * total if df > 1 else 0.0))
    term = total = 1.0
    for k in range(1, df // 2):
        term *= (2 * k - 1) / (2 * k) * c2
        total += term
    return s * total


def t_quantile(level: float, df: int) -> float:
    """Two-sided Student-t critical value: P(|T| ≤ q) = level. Computed exactly (series and
    bisection) for any integer df, so no table can be mistyped and any level works."""
    check_level(level)
    if df < 1:
        raise ValueError(f"df must be >= 1, not {df}")
    lo, hi = 0.0, math.pi / 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_coverage(mid, df) < level:
            lo = mid
        else:
            hi = mid
    return math.sqrt(df) * math.tan(0.5 * (lo + hi))


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
        vals = [d[key] for d in dicts if key in d]
        k = len(vals)
        mean = sum(vals) / k
        if k < 2:
            out[key] = SeedSummary(mean=mean, low=None, high=None, std=None, n_seeds=k)
            continue
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (k - 1))
        half = t_quantile(level, k - 1) * std / math.sqrt(k)
        out[key] = SeedSummary(mean=mean, low=mean - half, high=mean + half, std=std, n_seeds=k)
    return out


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
