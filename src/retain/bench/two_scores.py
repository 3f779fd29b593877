"""A bench by each of its two scores: every run re-scored with `generate` and with `loglik`
(`results.scorers.rescored`) and summarised by the same `aggregate.summarise`, so each score
gets its mean over seeds, its two-level interval and its paired difference against
`sequential`. Runs with one score only (written before both were kept) give no such table."""

from __future__ import annotations

import dataclasses

import numpy as np

from retain.bench.aggregate import BASELINE, BenchSummary, SeedRun, summarise
from retain.bench.table import estimate_text
from retain.eval.matrix import ScoreMatrix
from retain.results.scorers import SCORE_COLUMNS, cell_means, rescored, scores_present

SHOWN = ("ap", "bwt", "forgetting_max")


def rescored_run(run: SeedRun, score: str) -> SeedRun | None:
    """The run as it would read with `score` primary; None when it does not carry it."""
    from retain.eval.metrics import compute_metrics

    if run.examples is None or score not in scores_present(run.examples, run.tasks):
        return None
    examples = rescored(run.examples, run.tasks, score)
    matrix = ScoreMatrix.from_json(run.matrix.to_json())
    values = cell_means(examples, run.tasks, "scores", matrix.R.shape[0])
    matrix.R = np.where(np.isfinite(values), values, matrix.R)
    metrics = {**compute_metrics(matrix), "cost": run.metrics.get("cost") or {}}
    return dataclasses.replace(run, examples=examples, metrics=metrics, matrix=matrix)


def by_score(
    methods: list[str], seeds: list[int], runs: dict[tuple[str, int], SeedRun]
) -> dict[str, BenchSummary]:
    """{score: the bench summarised with that score primary}, for scores every run carries."""
    out = {}
    for score in SCORE_COLUMNS:
        switched = {k: rescored_run(r, score) for k, r in runs.items()}
        if runs and all(r is not None for r in switched.values()):
            out[score] = summarise(methods, seeds, switched)  # type: ignore[arg-type]
    return out


def score_lines(summaries: dict[str, BenchSummary]) -> list[str]:
    """What `retain bench` prints per score: each method's metrics and its paired difference
    against sequential, with their intervals."""
    lines = []
    for score, summary in summaries.items():
        lines.append(f"by {score}:")
        for m in summary.methods:
            q = summary.quality.get(m, {})
            parts = [f"{n} {estimate_text(q.get(n), n)}" for n in SHOWN if q.get(n)]
            d = summary.differences.get(m, {})
            diff = [f"{n} {estimate_text(d.get(n), n, signed=True)}" for n in SHOWN if d.get(n)]
            tail = f" | vs {BASELINE}: " + "; ".join(diff) if diff else ""
            lines.append(f"  {m}: " + "; ".join(parts) + tail)
    return lines
