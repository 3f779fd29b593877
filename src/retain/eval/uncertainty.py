"""Uncertainty on the continual-learning metrics: bootstrap CIs of one run.

One test example moves a task score by 100/n points, so a metric without an interval cannot
tell a method's effect from noise. Everything here resamples the per-example results of a run
(`retain.storage.examples`), stratified by task: each task's (and general benchmark's)
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
`normalized_avg` take maxima over noisy cells and are biased upward; their cross-fitted
counterparts (`eval/crossfit.py`, `*_xfit`) are not, and are the headline values.

Draws are stratified by task and by half (even / odd example positions) so that the cross-fit
keeps its split; intervals, from the draws' variances, come from `eval/stats.py`, the one place
that turns resamples into intervals; paired differences of two runs are in
`eval/paired_differences.py`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypedDict

import numpy as np

from retain.eval.crossfit import (
    PLUGIN_MAX,
    XFIT_METRICS,
    crossfit_metrics,
    strata_sizes,
    stratified_draw,
)
from retain.eval.matrix import ScoreMatrix
from retain.eval.metrics import _general_used
from retain.eval.stats import LEVEL, check_level, estimate
from retain.storage.examples import PERPLEXITY, ExampleResults

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
    *XFIT_METRICS,
)
"""Scalar metrics that get an interval; `general_delta:<name>` (one benchmark, perplexity
columns included, in their own unit) and the list `ap_per_stage` come on top."""

NOISE_MIN_EXAMPLES = 50
"""Below this many test examples per task, one example moves a score by more than 2 points
(`eval.seeds.noise_note` says so on every report)."""


class Interval(TypedDict):
    value: float
    low: float | None
    high: float | None
    """None for the papers' max-based plug-ins (`crossfit.PLUGIN_MAX`): biased, no interval."""


# ---- resampling ----


def resample_indices(
    results: ExampleResults, names: Sequence[str], n_resamples: int, seed: int
) -> dict[str, np.ndarray]:
    """Bootstrap draws [n_resamples, n] per column, in the order of `names`, from one seeded
    generator, stratified by half (`crossfit.stratified_draw`); columns without examples draw
    nothing. Public so a check can reuse the draws."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, not {n_resamples}")
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name in names:
        n = results.n_examples(name)
        if n:
            out[name] = stratified_draw(rng, n, n_resamples)
    return out


def resampling_strata(results: ExampleResults, names: Sequence[str]) -> list[int]:
    """Sizes of the strata the draws resample within (two halves per column)."""
    return [m for name in names for m in strata_sizes(results.n_examples(name))]


def _column(results: ExampleResults, name: str, idx: np.ndarray | None) -> tuple[Any, ...]:
    """(stages, values, half A, half B), values [S, B]: cell values (resampled when `idx` is
    given), then the mean scores of the even- and odd-position examples (the cross-fit's
    halves; the values again for a perplexity column or a single example)."""
    stages = np.array(results.stages_of(name), dtype=np.int64)
    if results.kind(name) == PERPLEXITY:  # a ratio of sums: resample numerator and denominator
        if idx is None:
            values = np.array([[results.get(int(s), name).value()] for s in stages])
            return stages, values, values, values
        nll = np.take(results.stacked(name, "nll_sum")[1], idx, axis=1).sum(axis=-1)
        tokens = np.take(results.stacked(name, "token_count")[1], idx, axis=1).sum(axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.exp(nll / tokens)
        return stages, values, values, values
    scores = results.stacked(name)[1]
    n = scores.shape[1]
    draw = np.arange(n)[None, :] if idx is None else idx
    picked = np.take(scores, draw, axis=1)  # [S, B, n]
    if idx is None:
        values = np.array([[results.get(int(s), name).value()] for s in stages])
    else:
        values = 100.0 * picked.sum(axis=-1) / n
    if n < 2:
        return stages, values, values, values
    return stages, values, 100.0 * picked[..., 0::2].mean(-1), 100.0 * picked[..., 1::2].mean(-1)


def _build(
    results: ExampleResults,
    tasks: Sequence[str],
    general: Sequence[str],
    indices: dict[str, np.ndarray] | None,
    batch: int,
) -> list[np.ndarray]:
    """[R, G, RA, RB] of shapes [batch, T+1, T|M] (`indices` None: the plain matrix; RA, RB
    the task halves), then the masks of evaluated cells, taken from the stored cells so a NaN
    replicate cannot hide one."""
    stages = len(tasks) + 1
    out, masks = [], []
    halves = [np.full((batch, stages, len(tasks)), np.nan) for _ in range(2)]
    for is_task, columns in ((True, tasks), (False, general)):
        M = np.full((batch, stages, len(columns)), np.nan)
        mask = np.zeros((stages, len(columns)), dtype=bool)
        for j, name in enumerate(columns):
            if not results.n_examples(name):
                continue
            idx = None if indices is None else indices[name]
            rows, values, half_a, half_b = _column(results, name, idx)
            if rows.size and rows.max() >= stages:
                raise ValueError(f"{name!r} has stage {rows.max()} beyond the {len(tasks)} tasks")
            M[:, rows, j] = values.T
            if is_task:
                halves[0][:, rows, j], halves[1][:, rows, j] = half_a.T, half_b.T
            mask[rows, j] = True
        out.append(M)
        masks.append(mask)
    return out + halves + masks


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


def batch_metrics(
    R: np.ndarray,
    G: np.ndarray,
    halves: tuple[np.ndarray, np.ndarray] | None,
    present: np.ndarray,
    gpresent: np.ndarray,
    used: Sequence[int],
    general: Sequence[str],
) -> dict[str, np.ndarray]:
    """Every defined metric as an array over the batch; undefined metrics are left out.
    Public for `benchmarks/interval_coverage.py`, which scores simulated matrices with it."""
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
    if halves is not None:
        out.update(crossfit_metrics(*halves, present, n))
    return out


def evaluate_metrics(
    results: ExampleResults,
    tasks: Sequence[str],
    general: Sequence[str],
    indices: dict[str, np.ndarray] | None,
    batch: int,
) -> tuple[dict[str, np.ndarray], int]:
    """Every defined metric on each resample of `indices` (None: the point values, `batch` 1),
    and the last stage scored (the stream prefix the metrics cover)."""
    tasks, general = list(tasks), list(general)
    if not tasks:
        raise ValueError("at least one task is needed")
    if len(set(tasks + general)) != len(tasks) + len(general):
        raise ValueError("task and general benchmark names must be distinct")
    R, G, RA, RB, present, gpresent = _build(results, tasks, general, indices, batch)
    kinds = {m: "perplexity" for m in general if _is_perplexity(results, m)}
    used = [general.index(m) for m in _general_used(ScoreMatrix(tasks, general, kinds))]
    values = batch_metrics(R, G, (RA, RB), present, gpresent, used, general)
    return values, _prefix_length(present)


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
    values, _ = evaluate_metrics(results, task_names, general_names, indices, n_resamples)
    return values


def _is_perplexity(results: ExampleResults, name: str) -> bool:
    return bool(results.n_examples(name)) and results.kind(name) == PERPLEXITY


def point_metrics(
    results: ExampleResults, task_names: Sequence[str], general_names: Sequence[str] = ()
) -> dict[str, Any]:
    """The metrics of the plain matrix (None where undefined), equal to `compute_metrics`."""
    values, n = evaluate_metrics(results, task_names, general_names, None, 1)
    out: dict[str, Any] = {name: None for name in BOOTSTRAP_METRICS}
    for name, arr in values.items():
        out[name] = [float(v) for v in arr[0]] if arr.ndim == 2 else finite_or_none(arr[0])
    out["ap_per_stage"] = out.get("ap_per_stage") or []
    out["last_stage"] = n
    return out


def finite_or_none(x: Any) -> float | None:
    """A metric value for JSON: None where it is undefined (NaN or infinite)."""
    x = float(x)
    return x if math.isfinite(x) else None


def _interval(point: float, reps: np.ndarray, strata: Sequence[int], level: float) -> Interval:
    est = estimate([point], [reps], strata=strata, level=level)
    assert est.low is not None and est.high is not None
    return Interval(value=point, low=est.low, high=est.high)


def bootstrap_metrics(
    results: ExampleResults,
    task_names: Sequence[str],
    general_names: Sequence[str] = (),
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[str, Any]:
    """CIs `{"value", "low", "high"}` per metric over test examples, conditional on this
    training seed: t intervals from the stratified example bootstrap's variance with the
    small-sample correction (`eval/stats.py`).

    Keys: `BOOTSTRAP_METRICS` (None where the metric is undefined or needs missing cells),
    `general_delta:<name>` per general benchmark, and `ap_per_stage` (a list, one per stage).
    """
    check_level(level)
    names = [*task_names, *general_names]
    point, _ = evaluate_metrics(results, task_names, general_names, None, 1)
    idx = resample_indices(results, names, n_resamples, seed)
    reps, _ = evaluate_metrics(results, task_names, general_names, idx, n_resamples)
    strata = resampling_strata(results, names)
    out: dict[str, Any] = {name: None for name in BOOTSTRAP_METRICS}
    for name, value in point.items():
        if name in PLUGIN_MAX and finite_or_none(value[0]) is not None:
            out[name] = Interval(value=float(value[0]), low=None, high=None)
        elif name != "ap_per_stage" and finite_or_none(value[0]) is not None:
            out[name] = _interval(float(value[0]), reps[name], strata, level)
    out["ap_per_stage"] = []
    for t, value in enumerate(point["ap_per_stage"][0] if "ap_per_stage" in point else []):
        out["ap_per_stage"].append(
            _interval(float(value), reps["ap_per_stage"][:, t], strata, level)
        )
    return out
