"""A bench's numbers: each method's mean over seeds with its interval, and its paired
difference against `sequential`, by the crossed seed × example estimator of `eval/stats.py`.

Every run of a bench scores the same test examples (`data.subsample_seed`), so one example
draw (stratified by task and half) is shared by all seeds and methods; each run's metric on
each draw feeds `stats.estimate`, which separates the seed variance (shown per method), the
example variance and their interaction, and gives a t interval with Satterthwaite degrees of
freedom. With one seed an interval covers the test examples only, conditional on that training
seed, and the tables say so. Differences `method − sequential` are per-seed differences on the
shared draw; `ap` against `sequential` is the primary comparison (Holm across methods), every
other difference is Benjamini–Hochberg-adjusted (`stats.adjust`). The max-based metrics are
cross-fitted (`*_xfit`); the papers' plug-in values are shown as point values only. Cost
metrics have no test examples: mean and t-interval over seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retain.bench.claims import ClaimResult, judge_claims, paper_claims, stand_ins
from retain.bench.plan import REFERENCES, read_manifest
from retain.eval.crossfit import PLUGIN_MAX
from retain.eval.matrix import ScoreMatrix
from retain.eval.metrics import cost_summary, general_share
from retain.eval.stats import LEVEL, Estimate, adjust, estimate
from retain.eval.uncertainty import metric_replicates, resample_indices, resampling_strata
from retain.results.format_split import SPLIT_METRICS, bwt_split_replicates
from retain.storage.examples import ExampleResults
from retain.storage.files import read_log

QUALITY: tuple[str, ...] = (
    "ap", "bwt", "bwt_format", "bwt_knowledge", "forgetting_max_xfit", "forgetting_max", "fwt",
    "la", "general_delta", "f1_general_ap", "gap_closed",
)  # fmt: skip
"""Metrics from the score matrix, in table order (`gap_closed` needs both references;
`forgetting_max` is the papers' plug-in, a point value beside its cross-fit; `bwt_format` and
`bwt_knowledge`, generation BWT's exact split, `results/format_split.py`)."""

FROM_EXAMPLES = frozenset({"forgetting_max_xfit", *SPLIT_METRICS})
"""Metrics computed here from the per-example results, not read from `metrics.json`."""

COST: tuple[str, ...] = (
    "replayed_share", "general_share", "extra_forward_passes", "train_tokens",
    "train_tokens_per_s", "wall_clock_s", "cpu_seconds", "peak_memory_mb",
)  # fmt: skip
"""Cost per run from its log; `train_tokens` every trained row's tokens (replayed and general
rows included: exact, unlike times); `wall_clock_s` = training + evaluation seconds,
`cpu_seconds` the same in CPU time (comparable also when other jobs shared the machine)."""

BASELINE = "sequential"
PRIMARY = "ap"
SEED_DIFFERENCES = ("ap", "bwt")
"""Metrics whose difference against sequential the bench also gives seed by seed."""
N_RESAMPLES = 1000

__all__ = ["BASELINE", "COST", "LEVEL", "PRIMARY", "QUALITY", "Estimate", "summarise"]


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
    seed_differences: dict[str, dict[int, dict[str, Estimate | None]]] = field(
        default_factory=dict
    )
    """method − sequential on each seed alone, over its test examples (conditional on that
    seed, unadjusted): with few seeds the interval over seeds has few degrees of freedom, and
    these show whether an effect keeps its sign from seed to seed."""
    claims: list[ClaimResult] = field(default_factory=list)
    """The papers' orderings this bench can test (`bench/claims.py`)."""
    notes: list[str] = field(default_factory=list)


def load_run(method: str, seed: int, run_dir: Path) -> SeedRun | None:
    """A run with its score matrix, per-example results and cost; None when it has not
    finished."""
    import json

    try:
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        matrix = ScoreMatrix.from_csv(run_dir / "scores.csv")
    except (OSError, ValueError):
        return None
    log = run_dir / "log.jsonl"
    if log.exists():  # cost from the log by today's rules (metrics.json's is as of the run)
        metrics["cost"] = cost_summary(read_log(log))
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
        self._points: dict[tuple[str, int], dict[str, np.ndarray]] = {}
        first = next((r for r in runs if r.examples is not None), None)
        self.strata: list[int] = (
            resampling_strata(first.examples, [*first.tasks, *first.general])
            if first is not None and first.examples is not None else []
        )  # fmt: skip

    def point(self, run: SeedRun, name: str) -> float | None:
        """A metric computed from the run's examples (the cross-fits: not in metrics.json)."""
        if run.examples is None:
            return None
        key = (run.method, run.seed)
        if key not in self._points:
            self._points[key] = {
                **metric_replicates(run.examples, run.tasks, run.general, None),
                **bwt_split_replicates(run.examples, run.tasks, None),
            }
        value = self._points[key].get(name)
        return None if value is None or not math.isfinite(float(value[0])) else float(value[0])

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
            draw = self._draw_for(run)
            self._values[key] = {
                **metric_replicates(run.examples, run.tasks, run.general, draw, self.n),
                **bwt_split_replicates(run.examples, run.tasks, draw),
            }
        return self._values[key]


def _point(run: SeedRun, name: str, draws: _Draws | None = None) -> float | None:
    if name in FROM_EXAMPLES:
        return draws.point(run, name) if draws is not None else None
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
            r.seed: {n: _value(r, n, runs, draws) for n in (*QUALITY, *COST)} for r in mine
        }
        out.quality[method] = {n: _quality(mine, n, runs, draws) for n in QUALITY}
        out.cost[method] = {
            n: _seed_only([v for r in mine if (v := _cost(r, n)) is not None]) for n in COST
        }
        if method != BASELINE:
            if len(seeds) > 1:
                out.seed_differences[method] = {
                    r.seed: {n: _difference([r], n, runs, draws) for n in SEED_DIFFERENCES}
                    for r in mine
                }
            out.differences[method] = {
                n: _difference(mine, n, runs, draws)
                for n in QUALITY
                if n != "gap_closed" and n not in PLUGIN_MAX
            }
    out.differences = adjust(out.differences, PRIMARY, exclude=REFERENCES)

    def claim_difference(better: str, worse: str) -> Estimate | None:
        mine = [runs[(better, s)] for s in seeds if (better, s) in runs]
        return _difference(mine, PRIMARY, runs, draws, baseline=worse)

    read_as = stand_ins(methods, _setting(runs), BASELINE)
    out.claims = judge_claims(paper_claims(methods, read_as), claim_difference, read_as=read_as)
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


def _setting(runs: dict[tuple[str, int], SeedRun]) -> Any:
    """The bench's setting, as `sequential`'s first run recorded it (None where unreadable)."""
    from retain.config import load_config
    from retain.config_base import ConfigError

    first = next((r for (m, _), r in sorted(runs.items()) if m == BASELINE), None)
    if first is None or not (first.dir / "config.yaml").exists():
        return None
    try:
        return load_config(first.dir / "config.yaml")
    except (ConfigError, ValueError):
        return None


def gap_resolved(summary: BenchSummary) -> bool:
    """Whether multitask beat sequential significantly on `ap` (True when there is no multitask
    to tell): gap_closed divides by that gain, and where it is not resolved above 0 the ratio
    is noise over noise."""
    gain = summary.differences.get("multitask", {}).get("ap")
    return gain is None or bool(gain.significant and gain.mean > 0)


def _value(
    run: SeedRun, name: str, runs: dict[tuple[str, int], SeedRun], draws: _Draws | None = None
) -> float | None:
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
    return _point(run, name, draws)


def _references(run: SeedRun, runs: dict[tuple[str, int], SeedRun]) -> tuple[SeedRun, ...] | None:
    found = (runs.get(("sequential", run.seed)), runs.get(("multitask", run.seed)))
    if any(r is None or r.tasks != run.tasks for r in found):
        return None
    return found  # type: ignore[return-value]


def _seed_only(values: list[float]) -> Estimate | None:
    return estimate(values) if values else None


def _quality(
    mine: list[SeedRun], name: str, runs: dict[tuple[str, int], SeedRun], draws: _Draws
) -> Estimate | None:
    points: list[float] = []
    reps: list[np.ndarray] = []
    for run in mine:
        point = _value(run, name, runs, draws)
        if point is None:
            continue
        points.append(point)
        rep = _replicate(run, name, runs, draws)
        if rep is not None:
            reps.append(rep)
    if not points:
        return None
    if name in PLUGIN_MAX:  # the papers' plug-in: biased upward, a point value only
        return Estimate(math.fsum(points) / len(points), None, None, len(points))
    full = reps if len(reps) == len(points) else None
    return estimate(points, full, strata=draws.strata, shared=draws.shared)


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
    mine: list[SeedRun],
    name: str,
    runs: dict[tuple[str, int], SeedRun],
    draws: _Draws,
    baseline: str = BASELINE,
) -> Estimate | None:
    """Per-seed `method − baseline` on the same seed, paired through the shared draw."""
    points: list[float] = []
    reps: list[np.ndarray] = []
    for run in mine:
        base = runs.get((baseline, run.seed))
        if base is None:
            continue
        a, b = _point(run, name, draws), _point(base, name, draws)
        if a is None or b is None:
            continue
        points.append(a - b)
        ra, rb = draws.values(run), draws.values(base)
        if draws.shared and ra is not None and rb is not None and name in ra and name in rb:
            reps.append(ra[name] - rb[name])
    if not points:
        return None
    full = reps if len(reps) == len(points) else None
    return estimate(points, full, strata=draws.strata, shared=draws.shared, difference=True)
