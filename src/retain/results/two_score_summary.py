"""What `metrics.json` says about the two scores, and the lines the CLI prints about them.

`metrics.json["two_scores"]`: the scores the run carries; per score the headline metrics with
their 95 % intervals (the same bootstrap as the primary's, on the run re-scored with that score);
both matrices and the valid-answer rate per cell (0–100, None where not evaluated); the most
frequent invalid answers per cell (from `generations.jsonl.gz`); and the format/knowledge
split of the generation forgetting (`format_split`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from retain.results.format_split import forgetting_split
from retain.results.scorers import VALID, cell_means, per_example, rescored, scores_present
from retain.storage.examples import ExampleResults
from retain.storage.generations import GENERATIONS_FILE, load_generations

KEY = "two_scores"
SHOWN = ("ap", "bwt", "forgetting_max", "la")


def _clean(x: Any) -> Any:
    """NaN becomes None, so that metrics.json stays strict JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


def invalid_answers_by_cell(
    examples: ExampleResults, tasks: Sequence[str], generations: Mapping[tuple[int, str], Any]
) -> dict[str, dict[str, list[list[Any]]]]:
    """{task: {stage: [[answer, count], ...]}}: the most frequent invalid answers per cell."""
    from retain.eval.two_scores import invalid_answers

    out: dict[str, dict[str, list[list[Any]]]] = {}
    for (stage, task), texts in sorted(generations.items()):
        valid = per_example(examples, task, VALID, stage) if task in tasks else None
        if valid is None or len(valid) != len(texts):
            continue
        top = invalid_answers(texts, valid.tolist())
        if top:
            out.setdefault(task, {})[str(stage)] = [[t, c] for t, c in top]
    return out


def two_score_summary(
    examples: ExampleResults,
    tasks: Sequence[str],
    general: Sequence[str] = (),
    seed: int = 0,
    run_dir: Path | None = None,
    n_resamples: int = 1000,
) -> dict[str, Any]:
    """`{"two_scores": {...}}` (module docstring), or {} for a run with one score only."""
    from retain.eval.uncertainty import bootstrap_metrics

    present = scores_present(examples, tasks)
    if not present:
        return {}
    ci = {}
    for score in present:
        got = bootstrap_metrics(
            rescored(examples, tasks, score), tasks, general, n_resamples=n_resamples, seed=seed
        )
        ci[score] = {k: v for k, v in got.items() if k != "ap_per_stage"}
    n_stages = max(examples.stages()) + 1
    matrices = {s: cell_means(examples, tasks, s, n_stages).tolist() for s in present}
    generations = load_generations(run_dir / GENERATIONS_FILE) if run_dir is not None else {}
    out = {
        "scores": present,
        "tasks": list(tasks),
        "ci": ci,
        "matrices": matrices,
        "valid_rate": cell_means(examples, tasks, VALID, n_stages).tolist(),
        "invalid_answers": invalid_answers_by_cell(examples, tasks, generations),
        "split": forgetting_split(examples, tasks, n_resamples=n_resamples, seed=seed),
    }
    return {KEY: _clean(out)}


def _with_ci(ci: Any) -> str:
    if not isinstance(ci, dict) or ci.get("value") is None:
        return "—"
    low, high = ci.get("low"), ci.get("high")
    if low is None or high is None:
        return f"{ci['value']:.2f}"
    return f"{ci['value']:.2f} [{low:.1f},{high:.1f}]"


def two_score_lines(rows: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """Per run: each score's headline metrics with intervals, the final valid-answer rate and
    the format/knowledge split of BWT (nothing for runs with one score)."""
    lines: list[str] = []
    for name, metrics in rows:
        two = metrics.get(KEY)
        if not isinstance(two, dict):
            continue
        for score in two.get("scores", []):
            ci = (two.get("ci") or {}).get(score) or {}
            shown = "; ".join(f"{k} {_with_ci(ci.get(k))}" for k in SHOWN)
            lines.append(f"{name} by {score}: {shown}")
        valid = two.get("valid_rate") or []
        last = [v for v in (valid[-1] if valid else []) if v is not None]
        if last:
            lines.append(f"{name}: valid answers after the last task {sum(last) / len(last):.1f} %")
        bwt = (two.get("split") or {}).get("bwt")
        if isinstance(bwt, dict):
            lines.append(
                f"{name}: generation BWT {_with_ci(bwt.get('delta_g'))} = format "
                f"{_with_ci(bwt.get('format'))} + knowledge {_with_ci(bwt.get('knowledge'))}; "
                f"options {_with_ci(bwt.get('delta_loglik'))}"
            )
    return lines
