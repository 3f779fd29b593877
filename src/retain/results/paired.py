"""Which differences between runs are real: paired differences and seeds of one configuration.

A difference between two runs is judged against the noise of the test set it was measured on.
Runs scored on the very same test examples are compared with a paired bootstrap (one draw of
examples shared by both runs), which cancels the difficulty of the examples themselves and is
far tighter than comparing two separate intervals; the interval comes from `eval/stats.py`, as
in `retain bench`, so one pair gets one interval everywhere. It covers the test examples,
conditional on the two runs' training seeds. Several runs against one baseline are a family:
`ap` is Holm-adjusted across them, every other difference Benjamini–Hochberg-adjusted. Runs on
other tasks or other example sets cannot be paired; the page then says why instead of printing
a number. Runs that differ only in `seed` are also summarised as mean ± t-interval over seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from retain.eval.crossfit import PLUGIN_MAX
from retain.eval.paired_differences import Difference, as_difference, paired_estimates
from retain.eval.seeds import SeedSummary, combine_seeds
from retain.eval.stats import Estimate, adjust
from retain.results.pairing import Side, check_pairing
from retain.results.view import HEADLINE, RATIO_METRICS, RunView, higher_is_better, scale
from retain.storage.examples import EXAMPLES_FILE

N_RESAMPLES = 1000
SEED = 0


@dataclass(frozen=True)
class Pairing:
    """Differences `run − baseline` per metric (displayed scale), or why there are none."""

    differences: dict[str, Difference | None] | None
    reason: str | None = None
    note: str | None = None
    """How the runs were paired when it was not by example ids (results/pairing.py)."""


def pair_all(runs: Sequence[RunView]) -> list[Pairing | None]:
    """Each later run against the first, significance adjusted across the family (None for
    the baseline itself)."""
    raw = [_estimates(r, runs[0]) for r in runs[1:]]
    table = {str(k): est[0] for k, est in enumerate(raw) if not isinstance(est, str)}
    adjusted = adjust(table, "ap")
    out: list[Pairing | None] = [None]
    for k, est in enumerate(raw):
        if isinstance(est, str):
            out.append(Pairing(None, est))
        else:
            diffs = adjusted[str(k)]
            scaled = {n: _scaled(n, as_difference(d)) for n, d in diffs.items()}
            out.append(Pairing(scaled, note=est[1]))
    return out


def pair(run: RunView, baseline: RunView) -> Pairing:
    """Paired bootstrap of `run − baseline` over their shared test examples (a family of one:
    `ap` unadjusted, the other metrics Benjamini–Hochberg-adjusted)."""
    return pair_all([baseline, run])[1]  # type: ignore[return-value]


def _estimates(
    run: RunView, baseline: RunView
) -> tuple[dict[str, Estimate | None], str | None] | str:
    """The paired estimates of `run − baseline` and how the runs were paired when not by
    example ids, or why they cannot be paired."""
    if run.tasks != baseline.tasks:
        return "different tasks (or task order) than the baseline"
    if run.general != baseline.general:
        return "different general benchmarks than the baseline"
    missing = [r.name for r in (baseline, run) if r.examples is None]
    if missing:
        return f"no {EXAMPLES_FILE} in {', '.join(missing)}"
    assert run.examples is not None and baseline.examples is not None
    check = check_pairing(
        Side.of(run.name, run.dir, run.examples),
        Side.of(baseline.name, baseline.dir, baseline.examples),
        run.tasks,
        run.general,
    )
    if check.reason is not None:
        return check.reason
    try:
        estimates = paired_estimates(
            run.examples, baseline.examples, run.tasks, run.general, N_RESAMPLES, SEED
        )
    except ValueError as exc:
        return str(exc)
    return estimates, check.note


def _scaled(name: str, diff: Difference | None) -> Difference | None:
    if diff is None or name not in RATIO_METRICS:
        return diff
    return Difference(
        value=scale(name, diff["value"]) or 0.0,
        low=scale(name, diff["low"]) or 0.0,
        high=scale(name, diff["high"]) or 0.0,
        significant=diff["significant"],
    )


def verdict(name: str, diff: Difference | None) -> str:
    """'better' / 'worse' for a significant difference in the metric's direction, else ''."""
    if diff is None or not diff["significant"]:
        return ""
    up = diff["value"] > 0
    return "better" if up == higher_is_better(name) else "worse"


@dataclass(frozen=True)
class SeedGroup:
    """Runs of one configuration that differ only in their seed, and their combination."""

    members: list[int]
    seeds: list[object]
    summary: dict[str, SeedSummary]


def seed_groups(runs: Sequence[RunView]) -> list[SeedGroup]:
    """Groups of ≥ 2 runs whose configs agree once seed, name and output_dir are left out and
    whose seeds differ; a run without config.yaml joins no group (nothing to compare)."""
    by_key: dict[str, list[int]] = {}
    for k, run in enumerate(runs):
        key = run.config_key()
        if key is not None:
            by_key.setdefault(key, []).append(k)
    groups = []
    for members in by_key.values():
        seeds = [runs[k].seed for k in members]
        if len(members) < 2 or len({repr(s) for s in seeds}) < 2:
            continue
        dicts = [{name: runs[k].value(name) for name in HEADLINE} for k in members]
        clean = [{n: v for n, v in d.items() if v is not None} for d in dicts]
        summary = combine_seeds(clean)
        for name in PLUGIN_MAX:  # the papers' plug-in: biased at small n, a point value only
            if name in summary:
                summary[name] = {**summary[name], "low": None, "high": None}
        groups.append(SeedGroup(members, seeds, summary))
    return groups
