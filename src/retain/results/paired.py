"""Which differences between runs are real: paired differences and seeds of one configuration.

A difference between two runs is judged against the noise of the test set it was measured on.
Runs scored on the very same test examples are compared with a paired bootstrap (one draw of
examples shared by both runs), which cancels the difficulty of the examples themselves and is
far tighter than comparing two separate intervals. Runs on other tasks or other example sets
cannot be paired; the page then says why instead of printing a number. Runs that differ only
in `seed` are also summarised as mean ± t-interval over seeds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from retain.eval.seeds import SeedSummary, combine_seeds
from retain.eval.uncertainty import Difference, paired_difference
from retain.results.examples import EXAMPLES_FILE
from retain.results.pairing import Side, check_pairing
from retain.results.view import HEADLINE, RATIO_METRICS, RunView, higher_is_better, scale

N_RESAMPLES = 1000
SEED = 0


@dataclass(frozen=True)
class Pairing:
    """Differences `run − baseline` per metric (displayed scale), or why there are none."""

    differences: dict[str, Difference | None] | None
    reason: str | None = None
    note: str | None = None
    """How the runs were paired when it was not by example ids (results/pairing.py)."""


def pair(run: RunView, baseline: RunView) -> Pairing:
    """Paired bootstrap of `run − baseline` over their shared test examples."""
    if run.tasks != baseline.tasks:
        return Pairing(None, "different tasks (or task order) than the baseline")
    if run.general != baseline.general:
        return Pairing(None, "different general benchmarks than the baseline")
    missing = [r.name for r in (baseline, run) if r.examples is None]
    if missing:
        return Pairing(None, f"no {EXAMPLES_FILE} in {', '.join(missing)}")
    assert run.examples is not None and baseline.examples is not None
    check = check_pairing(
        Side.of(run.name, run.dir, run.examples),
        Side.of(baseline.name, baseline.dir, baseline.examples),
        run.tasks,
        run.general,
    )
    if check.reason is not None:
        return Pairing(None, check.reason)
    try:
        raw = paired_difference(
            run.examples, baseline.examples, run.tasks, run.general, N_RESAMPLES, SEED
        )
    except ValueError as exc:
        return Pairing(None, str(exc))
    return Pairing({name: _scaled(name, d) for name, d in raw.items()}, note=check.note)


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
        groups.append(SeedGroup(members, seeds, combine_seeds(clean)))
    return groups
