"""Paired differences of two runs over the very same test examples.

Both runs are resampled with one shared draw (`uncertainty.resample_indices`), so the noise of
the test examples, common to both, cancels in the difference: a paired interval is far
narrower than the two runs' own intervals side by side. It is conditional on the seed both
runs share; differences over seeds are `bench/aggregate.py`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypedDict

from retain.eval.crossfit import PLUGIN_MAX
from retain.eval.stats import LEVEL, Estimate, check_level, estimate
from retain.eval.uncertainty import (
    BOOTSTRAP_METRICS,
    evaluate_metrics,
    finite_or_none,
    resample_indices,
    resampling_strata,
)
from retain.storage.examples import ExampleResults


class Difference(TypedDict):
    value: float
    low: float
    high: float
    significant: bool


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


def paired_estimates(
    results_a: ExampleResults,
    results_b: ExampleResults,
    task_names: Sequence[str],
    general_names: Sequence[str] = (),
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[str, Estimate | None]:
    """Metric differences a − b over the same test examples (one draw shared by both runs),
    as `stats.Estimate`s with p-values; None where either run lacks the metric."""
    check_level(level)
    names = [*task_names, *general_names]
    check_paired(results_a, results_b, names)
    pa, na = evaluate_metrics(results_a, task_names, general_names, None, 1)
    pb, nb = evaluate_metrics(results_b, task_names, general_names, None, 1)
    if na != nb:
        raise ValueError(f"cannot pair the runs: run A finished stage {na}, run B stage {nb}")
    idx = resample_indices(results_a, names, n_resamples, seed)
    ra, _ = evaluate_metrics(results_a, task_names, general_names, idx, n_resamples)
    rb, _ = evaluate_metrics(results_b, task_names, general_names, idx, n_resamples)
    strata = resampling_strata(results_a, names)
    out: dict[str, Estimate | None] = {name: None for name in BOOTSTRAP_METRICS}
    for name in pa:
        if name == "ap_per_stage" or name in PLUGIN_MAX or name not in pb:
            continue
        va, vb = finite_or_none(pa[name][0]), finite_or_none(pb[name][0])
        if va is None or vb is None:
            continue
        out[name] = estimate(
            [va - vb], [ra[name] - rb[name]], strata=strata, level=level, difference=True
        )
    return out


def as_difference(est: Estimate | None) -> Difference | None:
    """The JSON-ready dict of a difference (`significant` as `est` says: raw or adjusted)."""
    if est is None or est.low is None or est.high is None:
        return None
    return Difference(value=est.mean, low=est.low, high=est.high, significant=bool(est.significant))


def paired_difference(
    results_a: ExampleResults,
    results_b: ExampleResults,
    task_names: Sequence[str],
    general_names: Sequence[str] = (),
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[str, Difference | None]:
    """`paired_estimates` as dicts; `significant` when the interval excludes 0 (unadjusted)."""
    est = paired_estimates(
        results_a, results_b, task_names, general_names, n_resamples, seed, level
    )
    return {name: as_difference(e) for name, e in est.items()}
