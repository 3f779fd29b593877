"""The comparison of runs as Markdown and CSV (`comparison.md`, `comparison.csv`): the same
table as `comparison.html` (results/compare.py), for reading in a terminal and for scripts."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from retain.eval.paired_differences import Difference
from retain.eval.stats import ONE_SEED
from retain.results.html import ci_text, points
from retain.results.paired import Pairing, SeedGroup
from retain.results.view import RunView, arrow, direction_text, label, unit

PLUGIN_NOTE = (
    "forgetting_max, forgetting_first and normalized_avg are the papers' plug-in definitions "
    "(a max over noisy scores, biased upward at small n; no interval); their *_xfit rows are "
    "the cross-fitted headline values with intervals."
)
FAMILY_NOTE = (
    "ap Holm-adjusted across the compared runs (primary), every other metric "
    "Benjamini–Hochberg-adjusted (secondary); the intervals are unadjusted"
)

CSV_COLUMNS: tuple[str, ...] = (
    "metric", "direction", "unit", "run", "run_dir", "baseline", "value", "ci_low", "ci_high",
    "best", "diff_vs_baseline", "diff_low", "diff_high", "significant", "note",
)  # fmt: skip


def diff_text(d: Difference | None) -> str:
    """`+1.23 [+0.40, +2.01] *` (star: significant), or n/a."""
    if d is None:
        return "n/a"
    text = f"{points(d['value'], True)} {ci_text(d['low'], d['high'], True)}"
    return text + (" *" if d["significant"] else "")


def paired_runs(
    pairings: Sequence[Pairing | None],
) -> list[tuple[int, dict[str, Difference | None]]]:
    """(run index, differences) of the runs that could be paired with the baseline."""
    return [(k, p.differences) for k, p in enumerate(pairings) if p and p.differences is not None]


# ---- Markdown and CSV ----


def comparison_records(
    runs: Sequence[RunView],
    labels: Sequence[str],
    names: Sequence[str],
    best: dict[str, set[int]],
    pairings: Sequence[Pairing | None],
) -> list[dict[str, Any]]:
    """One record per (metric, run): the rows of `comparison.csv`."""
    out = []
    for n in names:
        for k, (lb, run) in enumerate(zip(labels, runs, strict=True)):
            low, high = run.bounds(n)
            p = pairings[k]
            d = p.differences.get(n) if p is not None and p.differences is not None else None
            out.append(
                {
                    "metric": n,
                    "direction": direction_text(n),
                    "unit": unit(n),
                    "run": lb,
                    "run_dir": str(run.dir),
                    "baseline": k == 0,
                    "value": run.value(n),
                    "ci_low": low,
                    "ci_high": high,
                    "best": k in best[n],
                    "diff_vs_baseline": d["value"] if d else None,
                    "diff_low": d["low"] if d else None,
                    "diff_high": d["high"] if d else None,
                    "significant": d["significant"] if d else None,
                    "note": p.reason if p is not None and p.reason else "",
                }
            )
    return out


def comparison_csv(records: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for rec in records:
        writer.writerow({k: "" if rec[k] is None else rec[k] for k in CSV_COLUMNS})
    return buf.getvalue()


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def comparison_markdown(
    runs: Sequence[RunView],
    labels: Sequence[str],
    names: Sequence[str],
    best: dict[str, set[int]],
    pairings: Sequence[Pairing | None],
    groups: Sequence[SeedGroup],
) -> str:
    lines = ["# retain: comparison of runs", ""]
    lines.append(
        f"Point value [95 % interval {ONE_SEED}]; **bold**: best run per metric; "
        f"↑ higher is better, ↓ lower is better; normalized_avg ×100. {PLUGIN_NOTE}"
    )
    lines.append("")
    rows = []
    for n in names:
        cells = [f"`{label(n)}`", arrow(n)]
        for k, run in enumerate(runs):
            text = f"{points(run.value(n))} {ci_text(*run.bounds(n))}".strip()
            cells.append(f"**{text}**" if k in best[n] else text)
        rows.append(cells)
    lines += _md_table(["metric", "better", *(_md(lb) for lb in labels)], rows)
    paired = paired_runs(pairings)
    if paired:
        lines += [
            "",
            f"## Paired difference against {_md(labels[0])}",
            "",
            "Run minus baseline [95 % paired interval over test examples, conditional on the "
            f"runs' training seeds]; * significant: "
            f"{FAMILY_NOTE}.",
            "",
        ]
        rows = [
            [f"`{label(n)}`", arrow(n), *(diff_text(diffs.get(n)) for _, diffs in paired)]
            for n in names
        ]
        lines += _md_table(
            ["metric", "better", *(f"{_md(labels[k])} − {_md(labels[0])}" for k, _ in paired)], rows
        )
    for g in groups:
        members = ", ".join(f"{labels[k]} (seed {g.seeds[j]})" for j, k in enumerate(g.members))
        lines += ["", f"## Seeds combined: {_md(members)}", "", "Mean [95 % t-interval].", ""]
        rows = [
            [
                f"`{label(n)}`",
                arrow(n),
                f"{points(s['mean'])} {ci_text(s['low'], s['high'])}",
                str(s["n_seeds"]),
            ]
            for n in names
            if (s := g.summary.get(n)) is not None
        ]
        lines += _md_table(["metric", "better", "mean", "seeds"], rows)
    notes = [
        f"- {_md(labels[k])} is not paired with {_md(labels[0])}: {_md(p.reason)}"
        for k, p in enumerate(pairings)
        if p is not None and p.differences is None
    ]
    notes += [f"- {_md(lb)}: {_md(r.noise)}" for lb, r in zip(labels, runs, strict=True) if r.noise]
    if notes:
        lines += ["", "## Notes", "", *notes]
    return "\n".join(lines) + "\n"
