"""The one place where retain turns numbers into intervals, p-values and verdicts.

Run metrics (`eval/uncertainty.py`), `retain report A B` (`results/paired.py`), `retain bench`
(`bench/aggregate.py`) and the demo's summary all call `estimate`, so one pair of runs gets
one interval wherever it is printed.

The estimator is a crossed seed × example variance decomposition, chosen over a hierarchical
bootstrap by `benchmarks/interval_coverage.py` (docs/statistics.md). For the mean θ̂ of a metric
over k seeds, scored on the same n test examples per task,

    Var(θ̂) = σ²_seed / k + σ²_example / n + σ²_seed×example / (k n).

Inputs per seed s: the point value θ_s and its values on B example resamples, one draw shared
by all seeds (stratified by task and by half, see `eval/crossfit.py`). Then
- V_mean = variance over draws of the seed-mean ≈ σ²_ex/n + σ²_sx/(kn),
- V_one  = mean over seeds of each seed's own draw variance ≈ (σ²_ex + σ²_sx)/n,
- σ²_sx/n = k (V_one − V_mean)/(k − 1), the answer flips that both the seed spread and the
  bootstrap see (the old rule added them twice),
- S² the sample variance of the θ_s: E[S²/k] = σ²_seed/k + σ²_sx/(kn), so
- Var(θ̂) = S²/k + σ²_ex/n with σ²_ex/n = max(0, V_mean − σ²_sx/(kn)): unbiased, flips counted
  once; a t interval with Satterthwaite degrees of freedom (k − 1 for S²/k, Σ(m − 1) over
  the resampling strata of m examples for the example term). Truncating the seed component
  at 0 instead (σ²_seed = max(0, S² − σ²_sx/n), which is shown) covered only 93 % at 3 seeds
  with a seed effect, with 10 % false positives (docs/statistics.md): three seeds cannot
  tell a seed effect from none, and the interval must not pretend they can.
The bootstrap variances carry the small-sample factor m/(m − 1) (a bootstrap divides by m, an
unbiased variance by m − 1), which matters at 8 examples per task (4 per half).

What the interval covers: with one seed, the trained model's expected score on the task's
distribution — "over test examples, conditional on this training seed"; with several seeds,
the expectation over training seeds and test examples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

LEVEL = 0.95
ALPHA = 1.0 - LEVEL
DF_CAP = 100_000
"""Beyond this t is z to many digits; caps the series in `_t_coverage`."""

ONE_SEED = "over test examples, conditional on this training seed"
SEVERAL_SEEDS = "over training seeds and test examples"


def scope_text(n_seeds: int) -> str:
    """What an interval on `n_seeds` seeds covers, for every caption and legend."""
    return ONE_SEED if n_seeds <= 1 else SEVERAL_SEEDS


def check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), not {level}")


# ---- Student's t, exactly, for integer df ----


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


def _int_df(df: float) -> int:
    """Satterthwaite df rounded down (a conservative quantile), within [1, DF_CAP]."""
    if not math.isfinite(df):
        return DF_CAP
    return max(1, min(DF_CAP, int(math.floor(df + 1e-9))))


def t_quantile(level: float, df: float) -> float:
    """Two-sided Student-t critical value: P(|T| ≤ q) = level, by bisection on the exact
    series, so no table can be mistyped and any level works. A fractional df is rounded down."""
    check_level(level)
    if df < 1:
        raise ValueError(f"df must be >= 1, not {df}")
    return _t_quantile(level, _int_df(df))


@lru_cache(maxsize=4096)
def _t_quantile(level: float, n: int) -> float:
    lo, hi = 0.0, math.pi / 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _t_coverage(mid, n) < level:
            lo = mid
        else:
            hi = mid
    return math.sqrt(n) * math.tan(0.5 * (lo + hi))


def t_pvalue(t: float, df: float) -> float:
    """Two-sided p-value P(|T| ≥ |t|) for Student's t (df rounded down)."""
    n = _int_df(df)
    return max(0.0, 1.0 - _t_coverage(math.atan(abs(t) / math.sqrt(n)), n))


# ---- the estimate ----


@dataclass(frozen=True)
class Estimate:
    mean: float
    low: float | None
    high: float | None
    n_seeds: int
    significant: bool | None = None
    """Differences only: the (multiplicity-adjusted, see `adjust`) test rejects 0."""
    se: float | None = None
    df: float | None = None
    p: float | None = None
    """Two-sided p-value of mean = 0 (unadjusted); differences only."""
    seed_sd: float | None = None
    """Estimated seed standard deviation of one run's value (√σ²_seed); None below 2 seeds."""
    correction: str | None = None
    """'holm', 'bh' or None: the multiplicity control `significant` reflects."""
    components: tuple[float, float, float] | None = None
    """(σ²_seed, σ²_ex/n, σ²_seed×example/n) at this bench's n per task, for ≥ 2 seeds on
    shared examples: what `retain size` plans a study from. σ²_seed = S² − σ²_sx/n here is
    not truncated at 0 (averages over methods or pilots stay unbiased); `seed_sd` is."""

    @property
    def scope(self) -> str:
        return scope_text(self.n_seeds)


def small_sample_factor(strata: Sequence[int]) -> float:
    """m/(m − 1) for the harmonic mean m of the resampling strata with ≥ 2 examples."""
    sizes = [m for m in strata if m >= 2]
    if not sizes:
        return 1.0
    m = len(sizes) / sum(1.0 / s for s in sizes)
    return m / (m - 1.0)


def example_df(strata: Sequence[int]) -> float:
    """Degrees of freedom of a stratified variance: Σ (m − 1) over strata, at least 1."""
    return float(max(1, sum(m - 1 for m in strata if m >= 2)))


def _var(x: np.ndarray) -> float:
    return float(np.var(x, ddof=1)) if x.size >= 2 else 0.0


def estimate(
    points: Sequence[float],
    reps: Sequence[np.ndarray] | None = None,
    *,
    strata: Sequence[int] = (),
    shared: bool = True,
    level: float = LEVEL,
    difference: bool = False,
) -> Estimate:
    """Mean over seeds of `points` with its interval (module docstring).

    `reps[s]` are seed s's values on the example resamples ([B] each, one draw shared by all
    seeds when `shared`); `strata` the sizes of the resampling strata. Without `reps` (cost
    metrics, runs without per-example results) the interval is the t-interval over seeds, and
    none below 2 seeds. Seeds scored on different examples (`shared` False) have the example
    noise inside their spread: the t-interval over seeds is then the whole story.
    """
    check_level(level)
    k = len(points)
    if k < 1:
        raise ValueError("estimate needs at least one value")
    mean = math.fsum(points) / k
    s2 = _var(np.asarray(points, dtype=float)) if k >= 2 else None
    seed_var: float | None = None
    components: tuple[float, float, float] | None = None
    if reps is not None and len(reps) == k:
        draws = np.stack([np.asarray(r, dtype=float) for r in reps])
        draws = draws[:, np.all(np.isfinite(draws), axis=0)]
        c = small_sample_factor(strata)
        v_one = c * float(np.mean([_var(row) for row in draws])) if draws.size else 0.0
        v_mean = c * _var(draws.mean(axis=0)) if draws.size else 0.0
        df_ex = example_df(strata)
        if k == 1:
            var, df = v_one, df_ex
        elif shared:
            flips = max(0.0, k * (v_one - v_mean) / (k - 1))
            seed_var = max(0.0, (s2 or 0.0) - flips)
            spread, example = (s2 or 0.0) / k, max(0.0, v_mean - flips / k)
            var = spread + example
            parts = spread**2 / (k - 1) + example**2 / df_ex
            df = var**2 / parts if parts > 0 else df_ex
            components = ((s2 or 0.0) - flips, example, flips)
        else:
            seed_var = max(0.0, (s2 or 0.0) - v_one)
            var, df = (s2 or 0.0) / k, float(k - 1)
    elif k >= 2:
        assert s2 is not None
        seed_var, var, df = s2, s2 / k, float(k - 1)
    else:
        return Estimate(mean, None, None, k)
    se = math.sqrt(max(var, 0.0))
    half = t_quantile(level, df) * se
    p = None
    if difference:
        p = t_pvalue(mean / se, df) if se > 0 else (0.0 if mean != 0 else 1.0)
    return Estimate(
        mean=mean,
        low=mean - half,
        high=mean + half,
        n_seeds=k,
        significant=bool(mean - half > 0 or mean + half < 0) if difference else None,
        se=se,
        df=df,
        p=p,
        seed_sd=None if seed_var is None else math.sqrt(seed_var),
        components=components,
    )


# ---- multiplicity ----


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    out, running = [1.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def benjamini_hochberg(pvalues: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg adjusted p-values (false-discovery-rate control)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i], reverse=True)
    out, running = [1.0] * m, 1.0
    for rank, i in enumerate(order):
        running = min(running, m * pvalues[i] / (m - rank))
        out[i] = min(1.0, running)
    return out


ADJUST = {"holm": holm, "bh": benjamini_hochberg}
CORRECTION_TEXT = {
    "holm": "Holm-adjusted across the methods (primary comparison)",
    "bh": "Benjamini–Hochberg across the other differences (secondary)",
}


def adjust(
    table: Mapping[str, Mapping[str, Estimate | None]],
    primary: str = "ap",
    exclude: Sequence[str] = (),
    alpha: float = ALPHA,
) -> dict[str, dict[str, Estimate | None]]:
    """Differences `table[row][metric]` with `significant` after multiplicity control.

    `primary` over the rows not in `exclude` is the primary family (Holm); every other
    difference is one secondary family (Benjamini–Hochberg). Estimates without a p-value keep
    their own verdict."""
    out = {row: dict(values) for row, values in table.items()}
    families: dict[str, list[tuple[str, str]]] = {"holm": [], "bh": []}
    for row, values in table.items():
        for name, est in values.items():
            if est is None or est.p is None:
                continue
            primary_cell = name == primary and row not in exclude
            families["holm" if primary_cell else "bh"].append((row, name))
    for kind, cells in families.items():
        adjusted = ADJUST[kind]([table[r][n].p for r, n in cells])  # type: ignore[union-attr]
        for (row, name), p_adj in zip(cells, adjusted, strict=True):
            est = table[row][name]
            assert est is not None
            out[row][name] = replace(est, significant=bool(p_adj < alpha), correction=kind)
    return out
