"""Both scores of a run read back from `examples.npz`: each score's matrix and intervals, the
valid-answer rate per cell, and a finished run re-scored with the other score as primary.

A task with options carries per example `generate` (the greedy answer by the task's string
metric), `loglik` (option log-likelihood) and `valid` (the answer is one of the options) as
extra columns (`eval.two_scores`). The primary score is the `scores` array; switching it needs
no model: the other column becomes `scores` (`rescored`) and every metric and interval follows
from the same functions a run uses. Runs written before both scores existed have neither
column; `scores_present` says so and the report names the one score they have.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from retain.results.examples import PERPLEXITY, ExampleResults

SCORE_COLUMNS: tuple[str, ...] = ("generate", "loglik")
VALID = "valid"


def scores_present(examples: ExampleResults | None, tasks: Sequence[str]) -> list[str]:
    """Which of `generate` / `loglik` some task column of the run carries."""
    if examples is None:
        return []
    found = set()
    for name in tasks:
        stages = examples.stages_of(name)
        if stages and examples.kind(name) != PERPLEXITY:
            cell = examples.get(stages[0], name)
            assert cell is not None
            found |= {s for s in SCORE_COLUMNS if s in cell.extra}
    return [s for s in SCORE_COLUMNS if s in found]


def rescored(examples: ExampleResults, tasks: Sequence[str], score: str) -> ExampleResults:
    """A copy whose task columns score by `score` where they carry it (others unchanged), so
    that `bootstrap_metrics` and `paired_difference` give that score's intervals."""
    out = ExampleResults()
    for name in examples.names():
        ids = examples.ids(name)
        for stage in examples.stages_of(name):
            cell = examples.get(stage, name)
            assert cell is not None
            if cell.kind == PERPLEXITY:
                out.set_perplexity(stage, name, cell.nll_sum, cell.token_count, ids)
                continue
            scores = cell.extra.get(score, cell.scores) if name in tasks else cell.scores
            out.set(stage, name, scores, cell.extra, ids)
    return out


def cell_means(
    examples: ExampleResults, tasks: Sequence[str], column: str, n_stages: int
) -> np.ndarray:
    """[n_stages, T] of 100·mean of a per-example column (`scores` or an extra); NaN where the
    cell was not evaluated or does not carry the column."""
    out = np.full((n_stages, len(tasks)), np.nan)
    for j, name in enumerate(tasks):
        for stage in examples.stages_of(name):
            cell = examples.get(stage, name)
            assert cell is not None
            values = cell.scores if column == "scores" else cell.extra.get(column)
            if values is not None and stage < n_stages:
                out[stage, j] = 100.0 * float(np.mean(values))
    return out


def per_example(
    examples: ExampleResults, name: str, column: str, stage: int
) -> np.ndarray | None:
    """One cell's per-example column, or None."""
    cell = examples.get(stage, name)
    if cell is None:
        return None
    return cell.scores if column == "scores" else cell.extra.get(column)
