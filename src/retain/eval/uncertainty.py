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
`forgetting_max` and `forgetting_first` need only the lower triangle. The two forgettings and
`normalized_avg` take maxima over noisy cells, which resampling inflates, so their intervals
can sit off-centre around the point value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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
    "forgetting_first",
    "fwt",
    "normalized_avg",
    "general_delta",
    "f1_general_ap",
)
"""Scalar metrics that get an interval; `general_delta:<name>` (one benchmark, perplexity
columns included, in their own unit) and the list `ap_per_stage` come on top."""

NOISE_MIN_EXAMPLES = 50
"""Below this many test examples per task, one example moves a score by more than 2 points
(`eval.seeds.noise_note` says so on every report)."""


class Interval(TypedDict):
    value: float
    low: float
    high: float


class Difference(TypedDict):
    value: float
    low: float
    high: float
    significant: bool


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
        forgetting = [R[:, j:n, j - 1].max(axis=1) - R[:, n, j - 1] for j in range(1, n)]
        out["forgetting_max"] = _seq_mean(forgetting)
        out["forgetting_first"] = forgetting[0]
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


def metric_replicates(
    results: ExampleResults,
    task_names: Sequence[str],
    general_names: Sequence[str],
    indices: dict[str, np.ndarray] | None,
    n_resamples: int = 1,
) -> dict[str, np.ndarray]:
    """Every defined metric of the run on each resample of `indices` (from `resample_indices`,
    possibly drawn on another run with the same examples: a shared draw pairs runs), as arrays
    [n_resamples] (`ap_per_stage`: [n_resamples, stages]); `indices` None: the point values."""
    values, _ = _evaluate(results, task_names, general_names, indices, n_resamples)
    return values


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


def percentile_bounds(reps: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile interval; NaN replicates (e.g. a resample with no positive score) are
    dropped, since the metric is undefined there rather than zero."""
    reps = reps[~np.isnan(reps)]
    if not reps.size:
        return math.nan, math.nan
    tail = round(50.0 * (1.0 - level), 10)  # 1 - 0.95 is not 0.05 in binary; 2.5 is meant
    low, high = np.percentile(reps, [tail, 100.0 - tail])
    return float(low), float(high)


def check_level(level: float) -> None:
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
    check_level(level)
    point, _ = _evaluate(results, task_names, general_names, None, 1)
    idx = resample_indices(results, [*task_names, *general_names], n_resamples, seed)
    reps, _ = _evaluate(results, task_names, general_names, idx, n_resamples)
    out: dict[str, Any] = {name: None for name in BOOTSTRAP_METRICS}
    for name, value in point.items():
        if name != "ap_per_stage" and _num(value[0]) is not None:
            low, high = percentile_bounds(reps[name], level)
            out[name] = Interval(value=float(value[0]), low=low, high=high)
    out["ap_per_stage"] = []
    for t, value in enumerate(point["ap_per_stage"][0] if "ap_per_stage" in point else []):
        low, high = percentile_bounds(reps["ap_per_stage"][:, t], level)
        out["ap_per_stage"].append(Interval(value=float(value), low=low, high=high))
    return out


def check_paired(a: ExampleResults, b: ExampleResults, names: Sequence[str]) -> None:
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
    check_level(level)
    names = [*task_names, *general_names]
    check_paired(results_a, results_b, names)
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
        low, high = percentile_bounds(ra[name] - rb[name], level)
        out[name] = Difference(
            value=va - vb, low=low, high=high, significant=bool(low > 0.0 or high < 0.0)
        )
    return out
