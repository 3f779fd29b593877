"""The report's two-score section: both matrices side by side with the valid-answer rate per
cell, each score's metrics with intervals, the format/knowledge split of generation forgetting,
the most frequent invalid answers, and (comparison page) paired differences per score.

Everything comes from `metrics.json["two_scores"]`, else is computed now from `examples.npz`
and `generations.jsonl.gz`; a run written before both scores were kept says which one it has.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from retain.results.html import e, table, value_ci_html
from retain.results.scorers import rescored, scores_present
from retain.results.two_score_summary import KEY, SHOWN, two_score_summary
from retain.results.view import RunView

PART_LABELS = {
    "delta_g": "ΔG (generation)",
    "format": "format ΔV·mean(C)",
    "knowledge": "knowledge ΔC·mean(V)",
    "delta_loglik": "ΔL (options)",
}


def two_scores(run: RunView) -> dict[str, Any]:
    """The run's `two_scores` record (stored, else computed now), or {}."""
    stored = run.metrics.get(KEY)
    if isinstance(stored, dict):
        return stored
    if run.examples is None or not run.tasks:
        return {}
    seed = run.seed if isinstance(run.seed, int) else 0
    got = two_score_summary(run.examples, run.tasks, run.general, seed, run.dir)
    return got.get(KEY, {})


def one_score_note(run: RunView) -> str:
    """What an older run (one score per task) carries, in words."""
    types = sorted({str(run.task_facts(t).get("score_type") or "n/a") for t in run.tasks})
    return (
        f"<p>This run carries one score per task ({e(', '.join(types))}): it was written "
        "before generation and option scores were both kept, or its tasks have no options.</p>"
    )


def _ci(d: Any, signed: bool = False) -> str:
    if not isinstance(d, dict) or d.get("value") is None:
        return "n/a"
    return value_ci_html(d["value"], d.get("low"), d.get("high"), signed)


def _cell(value: Any, valid: Any = None) -> str:
    if value is None:
        return ""
    text = f"{value:.1f}"
    return text if valid is None else f'{text} <span class="ci">v {valid:.0f}</span>'


def _matrices(two: dict[str, Any]) -> str:
    tasks: list[str] = two.get("tasks") or []
    valid = two.get("valid_rate") or []
    blocks = []
    for score in two.get("scores", []):
        matrix = (two.get("matrices") or {}).get(score) or []
        rows = []
        for stage, row in enumerate(matrix):
            if all(v is None for v in row):
                continue
            vrow = valid[stage] if stage < len(valid) else [None] * len(row)
            cells = [
                _cell(v, vrow[j] if score == "generate" and v is not None else None)
                for j, v in enumerate(row)
            ]
            rows.append([str(stage), *cells])
        caption = "generation (v: valid-answer rate %)" if score == "generate" else "options"
        blocks.append(
            f'<div style="display:inline-block;vertical-align:top;margin-right:2em">'
            f"<p><b>{e(caption)}</b></p>{table(['stage', *(e(t) for t in tasks)], rows)}</div>"
        )
    return "<div>" + "".join(blocks) + "</div>"


def _split(two: dict[str, Any]) -> str:
    split = two.get("split") or {}
    if not split:
        return ""
    rows = [[e(name), *(_ci(parts.get(k), True) for k in PART_LABELS)]
            for name, parts in (split.get("tasks") or {}).items()]
    rows.append(["<b>BWT</b>", *(_ci((split.get("bwt") or {}).get(k), True) for k in PART_LABELS)])
    return (
        "<p>Change of each task from the stage it was learned to the last stage, with G = V·C "
        "(V valid-answer rate, C accuracy among valid answers): ΔG = ΔV·mean(C) + ΔC·mean(V), "
        "format + knowledge, exactly; ΔL is the option score's change (95 % intervals).</p>"
        + table(["task", *PART_LABELS.values()], rows)
    )


def _invalid(two: dict[str, Any]) -> str:
    invalid = two.get("invalid_answers") or {}
    items = []
    for task, by_stage in invalid.items():
        last = max(by_stage, key=int)
        shown = ", ".join(f"<code>{e(t)}</code> ×{c}" for t, c in by_stage[last])
        items.append(f"<li>{e(task)} after stage {e(last)}: {shown}</li>")
    if not items:
        return ""
    return "<p>Most frequent invalid answers:</p><ul>" + "".join(items) + "</ul>"


def two_scores_section(run: RunView) -> str:
    """The section of `report.html` (module docstring)."""
    if not run.tasks:
        return ""
    two = two_scores(run)
    if not two:
        return one_score_note(run)
    head = ["score", *SHOWN]
    rows = [[e(s), *(_ci((two.get("ci") or {}).get(s, {}).get(k)) for k in SHOWN)]
            for s in two.get("scores", [])]
    return "".join([table(head, rows), _matrices(two), _split(two), _invalid(two)])


def two_scores_comparison(runs: Sequence[RunView], labels: Sequence[str]) -> str:
    """Each later run minus the first, per score, by the paired bootstrap over shared examples."""
    from retain.eval.paired_differences import paired_difference

    if len(runs) < 2:
        return ""
    base = runs[0]
    scores = scores_present(base.examples, base.tasks)
    if not scores:
        return "<p>The baseline carries one score per task; no per-score differences.</p>"
    rows = []
    for run, name in zip(runs[1:], labels[1:], strict=True):
        if run.tasks != base.tasks or run.examples is None:
            continue
        assert base.examples is not None
        for score in scores:
            if score not in scores_present(run.examples, run.tasks):
                rows.append([e(name), e(score), *(["n/a"] * len(SHOWN))])
                continue
            try:
                diffs = paired_difference(
                    rescored(run.examples, run.tasks, score),
                    rescored(base.examples, base.tasks, score), run.tasks, run.general,
                )
            except ValueError as exc:
                rows.append([e(name), e(score), e(str(exc)), *([""] * (len(SHOWN) - 1))])
                continue
            rows.append([e(name), e(score), *(_ci(diffs.get(k), True) for k in SHOWN)])
    if not rows:
        return ""
    return (
        f"<p>Run minus {e(labels[0])} per score (95 % paired bootstrap interval).</p>"
        + table(["run", "score", *SHOWN], rows, left=2)
    )
