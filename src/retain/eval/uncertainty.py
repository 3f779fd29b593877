"""Uncertainty on the continual-learning metrics: bootstrap CIs, paired differences, seeds.

One test example moves a task score by 100/n points, so a metric without an interval cannot
tell a method's effect from noise. Everything here resamples the per-example results of a run
(`retain.results.examples`), stratified by task: each task's (and general benchmark's)
examples are drawn with replacement, and the same draw is used at every stage, because every
stage scores the same test examples. Resampled score matrices are built for the whole batch at
once and the metrics are computed on the batch with the formulas of `retain.eval.metrics`,
summed in the same order, so the point `value` is bit-identical to `compute_metrics`.

Cells the metrics need: row 0, the lower triangle with the diagonal, and the superdiagonal
(for `fwt`). The stream prefix scored is the last stage L such that row 0 has tasks 1..L and
every row t ≤ L has tasks 1..t; for a matrix of whole rows this is `rows_done() - 1`, as in
`compute_metrics`. `fwt` is None when a superdiagonal cell is missing; `normalized_avg` takes
its maximum over the evaluated stages (as `compute_metrics` does); `ap`, `aia`, `la`, `bwt`,
`forgetting_max` need only the lower triangle. `forgetting_max` and `normalized_avg` take
maxima over noisy cells, which resampling inflates, so their intervals can sit off-centre
around the point value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import numpy as np

from retain.eval.matrix import ScoreMatrix
from retain.eval.metrics import _general_used
from retain.results.examples import PERPLEXITY, ExampleResults

BOOTSTRAP_METRICS: tuple[str, ...] = (
    "ap",
    "aia",
    "la",
    "bwt",
    "forgetting_max",
    "fwt",
    "normalized_avg",
    "general_delta",
    "f1_general_ap",
)
"""Scalar metrics that get an interval; `general_delta:<name>` (one benchmark, perplexity
columns included, in their own unit) and the list `ap_per_stage` come on top."""

NOISE_MIN_EXAMPLES = 50
"""Below this many test examples per task, one example moves a score by more than 2 points."""

_NOT_METRICS = frozenset({"num_tasks", "last_stage", "complete"})


class Interval(TypedDict):
    value: float
    low: float
    high: float


class Difference(TypedDict):
    value: float
    low: float
    high: float
    significant: bool


class SeedSummary(TypedDict):
    mean: float
    low: float | None
    high: float | None
    std: float | None
    n_seeds: int


# ---- resampling ----


def resample_indices(
    results: ExampleResults, names: Sequence[str], n_resamples: int, seed: int
) -> dict[str, np.ndarray]:
    """Bootstrap draws [n_resamples, n] per column, in the order of `names`, from one seeded
    generator; columns without examples draw nothing. Public so a check can reuse the draws."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, not {n_resamples}")
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name in names:
        n = results.n_examples(name)
        if n:
            out[name] = rng.integers(0, n, size=(n_resamples, n))
    return out


def _column(results: ExampleResults, name: str, idx: np.ndarray | None) -> tuple[Any, Any]:
    """(stages, values [S, B]) of one column: cell values, resampled when `idx` is given."""
    stages = np.array(results.stages_of(name), dtype=np.int64)
    if idx is None:
        return stages, np.array([[results.get(int(s), name).value()] for s in stages])
    if results.kind(name) == PERPLEXITY:  # a ratio of sums: resample numerator and denominator
        nll = np.take(results.stacked(name, "nll_sum")[1], idx, axis=1).sum(axis=-1)
        tokens = np.take(results.stacked(name, "token_count")[1], idx, axis=1).sum(axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            return stages, np.exp(nll / tokens)
    scores = results.stacked(name)[1]
    return stages, 100.0 * np.take(scores, idx, axis=1).sum(axis=-1) / scores.shape[1]


def _build(
    results: ExampleResults,
    tasks: Sequence[str],
    general: Sequence[str],
    indices: dict[str, np.ndarray] | None,
    batch: int,
) -> list[np.ndarray]:
    """[R, G] of shapes [batch, T+1, T|M] (`indices` None: the plain matrix), then the masks of
    evaluated cells, taken from the stored cells so a NaN replicate cannot hide one."""
    stages = len(tasks) + 1
    out, masks = [], []
    for columns in (tasks, general):
        M = np.full((batch, stages, len(columns)), np.nan)
        mask = np.zeros((stages, len(columns)), dtype=bool)
        for j, name in enumerate(columns):
            if not results.n_examples(name):
                continue
            idx = None if indices is None else indices[name]
            rows, values = _column(results, name, idx)
            if rows.size and rows.max() >= stages:
                raise ValueError(f"{name!r} has stage {rows.max()} beyond the {len(tasks)} tasks")
            M[:, rows, j] = values.T
            mask[rows, j] = True
        out.append(M)
        masks.append(mask)
    return out + masks


# ---- metrics on a batch of matrices ----


def _prefix_length(present: np.ndarray) -> int:
    """Last stage L with row 0 holding tasks 1..L and every row t ≤ L tasks 1..t."""
    n = 0
    for stage in range(1, present.shape[1] + 1):
        if not (present[0, :stage].all() and present[stage, :stage].all()):
            break
        n = stage
    return n


def _seq_mean(cols: Sequence[np.ndarray]) -> np.ndarray:
    """Mean summed left to right like Python's `sum`, so batch values match metrics.py bitwise."""
    total = cols[0] + 0.0
    for col in cols[1:]:
        total = total + col
    return total / len(cols)


def _batch_metrics(
    R: np.ndarray,
    G: np.ndarray,
    present: np.ndarray,
    gpresent: np.ndarray,
    used: Sequence[int],
    general: Sequence[str],
) -> dict[str, np.ndarray]:
    """Every defined metric as an array over the batch; undefined metrics are left out."""
    n = _prefix_length(present)
    out: dict[str, np.ndarray] = {}
    if n < 1:
        return out
    aps = [_seq_mean([R[:, t, i] for i in range(t)]) for t in range(1, n + 1)]
    out["ap_per_stage"] = np.stack(aps, axis=1)
    out["ap"] = aps[-1]
    out["aia"] = _seq_mean(aps)
    out["la"] = _seq_mean([R[:, i, i - 1] for i in range(1, n + 1)])
    if n >= 2:
        out["bwt"] = _seq_mean([R[:, n, i - 1] - R[:, i, i - 1] for i in range(1, n)])
        out["forgetting_max"] = _seq_mean(
            [R[:, j:n, j - 1].max(axis=1) - R[:, n, j - 1] for j in range(1, n)]
        )
        if all(present[i - 1, i - 1] and present[0, i - 1] for i in range(2, n + 1)):
            out["fwt"] = _seq_mean([R[:, i - 1, i - 1] - R[:, 0, i - 1] for i in range(2, n + 1)])
    if present[n, :n].all():
        total, count = np.zeros(R.shape[0]), np.zeros(R.shape[0])
        for i in range(n):
            rows = np.flatnonzero(present[: n + 1, i])  # evaluated stages, as metrics.py
            best = R[:, rows, i].max(axis=1)
            positive = best > 0
            total = total + np.where(positive, R[:, n, i] / np.where(positive, best, 1.0), 0.0)
            count = count + positive
        with np.errstate(invalid="ignore", divide="ignore"):
            out["normalized_avg"] = np.where(count > 0, total / count, np.nan)
    cols = [m for m in used if gpresent[0, m] and gpresent[n, m]]
    if cols:
        diff = np.ascontiguousarray(G[:, n, cols] - G[:, 0, cols])
        out["general_delta"] = np.mean(diff, axis=-1)
    after = [m for m in used if gpresent[n, m]]
    if after:
        g, a = np.mean(np.ascontiguousarray(G[:, n, after]), axis=-1), out["ap"]
        with np.errstate(invalid="ignore", divide="ignore"):
            out["f1_general_ap"] = np.where(g + a == 0, 0.0, 2.0 * g * a / (g + a))
    for m, name in enumerate(general):
        if gpresent[0, m] and gpresent[n, m]:
            out[f"general_delta:{name}"] = G[:, n, m] - G[:, 0, m]
    return out


def _evaluate(
    results: ExampleResults,
    tasks: Sequence[str],
    general: Sequence[str],
    indices: dict[str, np.ndarray] | None,
    batch: int,
) -> tuple[dict[str, np.ndarray], int]:
    tasks, general = list(tasks), list(general)
    if not tasks:
        raise ValueError("at least one task is needed")
    if len(set(tasks + general)) != len(tasks) + len(general):
        raise ValueError("task and general benchmark names must be distinct")
    R, G, present, gpresent = _build(results, tasks, general, indices, batch)
    kinds = {m: "perplexity" for m in general if _is_perplexity(results, m)}
    used = [general.index(m) for m in _general_used(ScoreMatrix(tasks, general, kinds))]
    return _batch_metrics(R, G, present, gpresent, used, general), _prefix_length(present)


def _is_perplexity(results: ExampleResults, name: str) -> bool:
    return bool(results.n_examples(name)) and results.kind(name) == PERPLEXITY


def point_metrics(
    results: ExampleResults, task_names: Sequence[str], general_names: Sequence[str] = ()
) -> dict[str, Any]:
    """The metrics of the plain matrix (None where undefined), equal to `compute_metrics`."""
    values, n = _evaluate(results, task_names, general_names, None, 1)
    out: dict[str, Any] = {name: None for name in BOOTSTRAP_METRICS}
    for name, arr in values.items():
        out[name] = [float(v) for v in arr[0]] if arr.ndim == 2 else _num(arr[0])
    out["ap_per_stage"] = out.get("ap_per_stage") or []
    out["last_stage"] = n
    return out


def _num(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _bounds(reps: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval; NaN replicates (e.g. a resample with no positive score) are
    dropped, since the metric is undefined there rather than zero."""
    reps = reps[~np.isnan(reps)]
    if not reps.size:
        return math.nan, math.nan
    tail = round(50.0 * (1.0 - level), 10)  # 1 - 0.95 is not 0.05 in binary; 2.5 is meant
    low, high = np.percentile(reps, [tail, 100.0 - tail])
    return float(low), float(high)


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), not {level}")


def bootstrap_metrics(
    results: ExampleResults,
    task_names: Sequence[str],
    general_names: Sequence[str] = (),
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Percentile CIs `{"value", "low", "high"}` per metric by stratified example bootstrap.

    Keys: `BOOTSTRAP_METRICS` (None where the metric is undefined or needs missing cells),
    `general_delta:<name>` per general benchmark, and `ap_per_stage` (a list, one per stage).
    """
    _check_level(level)
    point, _ = _evaluate(results, task_names, general_names, None, 1)
    idx = resample_indices(results, [*task_names, *general_names], n_resamples, seed)
    reps, _ = _evaluate(results, task_names, general_names, idx, n_resamples)
    out: dict[str, Any] = {name: None for name in BOOTSTRAP_METRICS}
    for name, value in point.items():
        if name != "ap_per_stage" and _num(value[0]) is not None:
            low, high = _bounds(reps[name], level)
            out[name] = Interval(value=float(value[0]), low=low, high=high)
    out["ap_per_stage"] = []
    for t, value in enumerate(point["ap_per_stage"][0] if "ap_per_stage" in point else []):
        low, high = _bounds(reps["ap_per_stage"][:, t], level)
        out["ap_per_stage"].append(Interval(value=float(value), low=low, high=high))
    return out


def _check_paired(a: ExampleResults, b: ExampleResults, names: Sequence[str]) -> None:
    """Pairing is only valid over the very same test examples in the same order."""
    for name in names:
        na, nb = a.n_examples(name), b.n_examples(name)
        if na != nb:
            problem = f"has {na} examples in run A and {nb} in run B"
        elif na and a.kind(name) != b.kind(name):
            problem = "is scored differently"
        elif na and None not in (a.ids(name), b.ids(name)) and a.ids(name) != b.ids(name):
            problem = "lists different example ids"
        else:
            continue
        raise ValueError(f"cannot pair the runs: {name!r} {problem}")


def paired_difference(
    results_a: ExampleResults,
    results_b: ExampleResults,
    task_names: Sequence[str],
    general_names: Sequence[str] = (),
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Difference | None]:
    """Metric differences a − b with a paired bootstrap CI (one draw shared by both runs);
    `significant` when the interval excludes 0. None where either run lacks the metric."""
    _check_level(level)
    names = [*task_names, *general_names]
    _check_paired(results_a, results_b, names)
    pa, na = _evaluate(results_a, task_names, general_names, None, 1)
    pb, nb = _evaluate(results_b, task_names, general_names, None, 1)
    if na != nb:
        raise ValueError(f"cannot pair the runs: run A finished stage {na}, run B stage {nb}")
    idx = resample_indices(results_a, names, n_resamples, seed)
    ra, _ = _evaluate(results_a, task_names, general_names, idx, n_resamples)
    rb, _ = _evaluate(results_b, task_names, general_names, idx, n_resamples)
    out: dict[str, Difference | None] = {name: None for name in BOOTSTRAP_METRICS}
    for name in pa:
        if name == "ap_per_stage" or name not in pb:
            continue
        va, vb = _num(pa[name][0]), _num(pb[name][0])
        if va is None or vb is None:
            continue
        low, high = _bounds(ra[name] - rb[name], level)
        out[name] = Difference(
            value=va - vb, low=low, high=high, significant=bool(low > 0.0 or high < 0.0)
        )
    return out


# ---- seeds ----


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
    _check_level(level)
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
    _check_level(level)
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
