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
from typing import Any

import numpy as np

from retain.storage.examples import PERPLEXITY, ExampleResults

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


KEPT_KEYS = ("cost", "truncation", "ties", "scoring", "warnings", "n_per_task", "noise_note",
             "two_scores", "definitions", "complete", "last_stage", "num_tasks")
"""`metrics.json` keys that do not depend on which score is primary."""


def switch_primary(run: Any, score: str) -> None:
    """Re-score a `RunView` in place with `score` as the primary score of every task that
    carries it: its matrix, examples and metrics (intervals are then bootstrapped anew)."""
    from retain.eval.metrics import compute_metrics

    if score not in SCORE_COLUMNS:
        raise ValueError(f"score must be one of {', '.join(SCORE_COLUMNS)}, not {score!r}")
    examples = run.examples
    present = scores_present(examples, run.tasks)
    if score not in present:
        have = " and ".join(present) or "one score per task (written before both were kept)"
        run.problems.append(f"this run has no {score} score ({have}); its own is shown")
        return
    switched = rescored(examples, run.tasks, score)
    run.__dict__["examples"] = switched  # the cached property now reads the re-scored run
    matrix = run.matrix
    values = cell_means(switched, run.tasks, "scores", matrix.R.shape[0])
    matrix.R = np.where(np.isfinite(values), values, matrix.R)
    for name in run.tasks:
        if score in scores_present(switched, [name]):
            decoding = matrix.decoding.get(name) or {}
            summed = decoding.get("loglik_norm", "bytes") == "sum"
            norm = "accuracy" if summed else "accuracy_norm"
            gen = str(decoding.get("generation_metric", "generate"))
            matrix.score_types[name] = norm if score == "loglik" else gen
    kept = {k: v for k, v in run.metrics.items() if k in KEPT_KEYS}
    run.metrics = {**compute_metrics(matrix), **kept}
    run.problems.append(
        f"Re-rendered with {score} as the primary score (as eval.score={score} would) from "
        "examples.npz: metrics and intervals are recomputed; metrics.json keeps the run's own."
    )
