"""A bench's numbers: each method's mean over seeds with an interval that covers both the seeds
and the test examples, and its paired difference against `sequential`.

Two sources of error, added in quadrature (decision: they are independent — one is the
training's randomness, the other the draw of test examples):
- test examples: a stratified bootstrap whose example draw is shared by every run scored on the
  same examples (all seeds and methods of a bench, whose data come from `data.subsample_seed`);
  the statistic of each draw is the mean over seeds, so its percentile interval gives the
  example half-widths below and above the point;
- seeds: `t(k−1) · s / √k` from the spread `s` of the per-seed point values (0 for one seed).
`low = mean − √(h_ex,low² + h_seed²)`, `high = mean + √(h_ex,high² + h_seed²)`. A paired
difference uses the same rule on per-seed differences `method − sequential` with the shared
draw, and is significant when its interval excludes 0. Cost metrics have no test examples:
mean and t-interval over seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retain.bench.plan import REFERENCES, read_manifest
from retain.eval.matrix import ScoreMatrix
from retain.eval.metrics import general_share
from retain.eval.seeds import t_quantile
from retain.eval.uncertainty import metric_replicates, percentile_bounds, resample_indices
from retain.results.examples import ExampleResults

QUALITY: tuple[str, ...] = (
    "ap", "bwt", "forgetting_max", "fwt", "la", "general_delta", "f1_general_ap", "gap_closed",
)  # fmt: skip
"""Metrics from the score matrix, in table order (`gap_closed` needs both references)."""

COST: tuple[str, ...] = (
    "replayed_share", "general_share", "extra_forward_passes", "train_tokens_per_s",
    "wall_clock_s", "cpu_seconds", "peak_memory_mb",
)  # fmt: skip
"""Cost per run from its log; `wall_clock_s` = training + evaluation seconds, `cpu_seconds` the
same in CPU time (comparable also when other jobs shared the machine)."""

BASELINE = "sequential"
LEVEL = 0.95
N_RESAMPLES = 1000


@dataclass(frozen=True)
class Estimate:
    mean: float
    low: float | None
    high: float | None
    n_seeds: int
    significant: bool | None = None
    """For differences: the interval excludes 0."""


@dataclass
class SeedRun:
    """One finished run of the bench, as the aggregation reads it."""

    method: str
    seed: int
    dir: Path
    tasks: list[str]
    general: list[str]
    examples: ExampleResults | None
    metrics: dict[str, Any]
    matrix: ScoreMatrix


@dataclass
class BenchSummary:
    methods: list[str]
    seeds: list[int]
    runs: dict[tuple[str, int], SeedRun]
    quality: dict[str, dict[str, Estimate | None]] = field(default_factory=dict)
    differences: dict[str, dict[str, Estimate | None]] = field(default_factory=dict)
    cost: dict[str, dict[str, Estimate | None]] = field(default_factory=dict)
    per_seed: dict[str, dict[int, dict[str, float | None]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def load_run(method: str, seed: int, run_dir: Path) -> SeedRun | None:
    """A run with its score matrix and per-example results; None when it has not finished."""
    import json

    try:
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        matrix = ScoreMatrix.from_csv(run_dir / "scores.csv")
    except (OSError, ValueError):
        return None
    examples = ExampleResults.load(run_dir) if (run_dir / "examples.npz").exists() else None
    return SeedRun(
        method, seed, run_dir, list(matrix.tasks), list(matrix.general), examples, metrics, matrix
    )


def load_bench(root: Path) -> tuple[list[str], list[int], dict[tuple[str, int], SeedRun]]:
    """The methods, seeds and finished runs a bench directory's manifest lists."""
    manifest = read_manifest(root)
    runs = {}
    for entry in manifest["runs"]:
        run = load_run(str(entry["method"]), int(entry["seed"]), Path(root) / entry["dir"])
        if run is not None:
            runs[(run.method, run.seed)] = run
    return list(manifest["methods"]), [int(s) for s in manifest["seeds"]], runs


# ---- the two-level interval ----


def combine(points: list[float], draws: list[np.ndarray] | None, level: float = LEVEL,
            difference: bool = False) -> Estimate:
    """Mean over seeds of `points`, interval from seeds and (when `draws` [k][B] are given)
    test-example resamples; see the module docstring."""
    k = len(points)
    mean = float(sum(points) / k)
    h_seed = 0.0
    if k >= 2:
        s = math.sqrt(sum((p - mean) ** 2 for p in points) / (k - 1))
        h_seed = t_quantile(level, k - 1) * s / math.sqrt(k)
    h_low = h_high = 0.0
    if draws is not None:
        stacked = np.mean(np.stack(draws), axis=0)
        q_low, q_high = percentile_bounds(stacked, level)
        if math.isfinite(q_low) and math.isfinite(q_high):
            h_low, h_high = max(mean - q_low, 0.0), max(q_high - mean, 0.0)
    if draws is None and k < 2:
        return Estimate(mean, None, None, k, None)
    low = mean - math.sqrt(h_low**2 + h_seed**2)
    high = mean + math.sqrt(h_high**2 + h_seed**2)
    significant = bool(low > 0.0 or high < 0.0) if difference else None
    return Estimate(mean, low, high, k, significant)


def _same_examples(runs: list[SeedRun]) -> bool:
    """Whether every run scored the very same test examples (a draw can then be shared):
    equal example ids, or for runs without them equal fingerprints (results/pairing.py)."""
    from retain.results.pairing import Side, check_pairing

    first = runs[0]
    assert first.examples is not None
    side = Side.of(f"{first.method} seed {first.seed}", first.dir, first.examples)
    for run in runs[1:]:
        if run.tasks != first.tasks or run.general != first.general or run.examples is None:
            return False
        other = Side.of(f"{run.method} seed {run.seed}", run.dir, run.examples)
        if not check_pairing(side, other, first.tasks, first.general).ok:
            return False
    return True


class _Draws:
    """Per-run metric values on the bootstrap draws (shared where the examples are)."""

    def __init__(self, runs: list[SeedRun], n_resamples: int, seed: int) -> None:
        self.n = n_resamples
        self.shared = bool(runs) and _same_examples(runs)
        self.seed = seed
        self._indices: dict[str, np.ndarray] | None = None
        self._values: dict[tuple[str, int], dict[str, np.ndarray]] = {}

    def _draw_for(self, run: SeedRun) -> dict[str, np.ndarray]:
        assert run.examples is not None
        names = [*run.tasks, *run.general]
        if self.shared:
            if self._indices is None:
                self._indices = resample_indices(run.examples, names, self.n, self.seed)
            return self._indices
        # other examples per seed: independent draws (no correlation to keep)
        return resample_indices(run.examples, names, self.n, self.seed + 7919 * run.seed)

    def values(self, run: SeedRun) -> dict[str, np.ndarray] | None:
        if run.examples is None:
            return None
        key = (run.method, run.seed)
        if key not in self._values:
            self._values[key] = metric_replicates(
                run.examples, run.tasks, run.general, self._draw_for(run), self.n
            )
        return self._values[key]


def _point(run: SeedRun, name: str) -> float | None:
    value = run.metrics.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(float(value)) else None


def _gap(ap: Any, seq: Any, multi: Any) -> Any:
    """(ap − seq)/(multi − seq), elementwise for arrays; NaN where the gap is 0."""
    denom = multi - seq
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom == 0, np.nan, (ap - seq) / np.where(denom == 0, 1.0, denom))


def _cost(run: SeedRun, name: str) -> float | None:
    cost = run.metrics.get("cost") or {}
    if name == "wall_clock_s":
        parts = [cost.get("train_seconds"), cost.get("eval_seconds")]
        return float(sum(parts)) if all(isinstance(p, int | float) for p in parts) else None
    if name == "general_share":  # derived, so runs finished before it existed have it too
        return general_share(cost)
    value = cost.get(name)
    return float(value) if isinstance(value, int | float) else None


def summarise(
    methods: list[str],
    seeds: list[int],
    runs: dict[tuple[str, int], SeedRun],
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> BenchSummary:
    """Every method's estimates over the seeds that finished (see the module docstring)."""
    out = BenchSummary(methods, seeds, runs)
    draws = _Draws(list(runs.values()), n_resamples, seed)
    if runs and not draws.shared:
        out.notes.append(
            "the runs did not all score the same test examples: example draws are independent "
            "per run and differences against sequential are not paired"
        )
    for method in methods:
        mine = [runs[(method, s)] for s in seeds if (method, s) in runs]
        out.per_seed[method] = {
            r.seed: {n: _value(r, n, runs) for n in (*QUALITY, *COST)} for r in mine
        }
        out.quality[method] = {n: _quality(mine, n, runs, draws) for n in QUALITY}
        out.cost[method] = {
            n: _seed_only([v for r in mine if (v := _cost(r, n)) is not None]) for n in COST
        }
        if method != BASELINE:
            out.differences[method] = {
                n: _difference(mine, n, runs, draws) for n in QUALITY if n != "gap_closed"
            }
    gain = out.differences.get("multitask", {}).get("ap")
    if not gap_resolved(out) and gain is not None:
        text = f"{gain.mean:+.2f}"
        if gain.low is not None and gain.high is not None:
            text += f" [{gain.low:+.2f}, {gain.high:+.2f}]"
        out.notes.append(
            f"multitask did not beat sequential on ap ({text}): there is no resolved gap to "
            "close, so gap_closed is not meaningful on this bench"
        )
    return out


def gap_resolved(summary: BenchSummary) -> bool:
    """Whether multitask beat sequential significantly on `ap` (True when there is no multitask
    to tell): gap_closed divides by that gain, and where it is not resolved above 0 the ratio
    is noise over noise."""
    gain = summary.differences.get("multitask", {}).get("ap")
    return gain is None or bool(gain.significant and gain.mean > 0)


def _value(run: SeedRun, name: str, runs: dict[tuple[str, int], SeedRun]) -> float | None:
    if name in COST:
        return _cost(run, name)
    if name == "gap_closed":
        if run.method in REFERENCES:
            return None  # 0 and 1 by definition
        refs = _references(run, runs)
        if refs is None:
            return None
        value = float(_gap(_point(run, "ap"), *(_point(r, "ap") for r in refs)))
        return value if math.isfinite(value) else None
    return _point(run, name)


def _references(run: SeedRun, runs: dict[tuple[str, int], SeedRun]) -> tuple[SeedRun, ...] | None:
    found = (runs.get(("sequential", run.seed)), runs.get(("multitask", run.seed)))
    if any(r is None or r.tasks != run.tasks for r in found):
        return None
    return found  # type: ignore[return-value]


def _seed_only(values: list[float]) -> Estimate | None:
    return combine(values, None) if values else None


def _quality(
    mine: list[SeedRun], name: str, runs: dict[tuple[str, int], SeedRun], draws: _Draws
) -> Estimate | None:
    points: list[float] = []
    reps: list[np.ndarray] = []
    for run in mine:
        point = _value(run, name, runs)
        if point is None:
            continue
        points.append(point)
        rep = _replicate(run, name, runs, draws)
        if rep is not None:
            reps.append(rep)
    if not points:
        return None
    return combine(points, reps if len(reps) == len(points) else None)


def _replicate(
    run: SeedRun, name: str, runs: dict[tuple[str, int], SeedRun], draws: _Draws
) -> np.ndarray | None:
    values = draws.values(run)
    if values is None:
        return None
    if name != "gap_closed":
        return values.get(name)
    refs = _references(run, runs)
    if refs is None or not draws.shared:
        return None
    ref_values = [draws.values(r) for r in refs]
    if any(v is None or "ap" not in v for v in ref_values):
        return None
    seq, multi = (v["ap"] for v in ref_values)  # type: ignore[index]
    return _gap(values["ap"], seq, multi)


def _difference(
    mine: list[SeedRun], name: str, runs: dict[tuple[str, int], SeedRun], draws: _Draws
) -> Estimate | None:
    """Per-seed `method − sequential` on the same seed, paired through the shared draw."""
    points: list[float] = []
    reps: list[np.ndarray] = []
    for run in mine:
        base = runs.get((BASELINE, run.seed))
        if base is None:
            continue
        a, b = _point(run, name), _point(base, name)
        if a is None or b is None:
            continue
        points.append(a - b)
        ra, rb = draws.values(run), draws.values(base)
        if draws.shared and ra is not None and rb is not None and name in ra and name in rb:
            reps.append(ra[name] - rb[name])
    if not points:
        return None
    return combine(points, reps if len(reps) == len(points) else None, difference=True)
