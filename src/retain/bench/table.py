"""The bench comparison as text: Markdown and CSV tables, and the lines the command prints.

One row per method: every metric as `mean [low, high]` (95 % over seeds and test examples, see
`bench/aggregate.py`), then the paired difference against `sequential` with `*` where its
interval excludes 0, then the cost. The CSV holds the same numbers in long form, one line per
method, metric and kind, for plotting elsewhere.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from retain.bench.aggregate import BASELINE, COST, QUALITY, BenchSummary, Estimate
from retain.results.view import arrow

LABELS = {
    "forgetting_max": "forgetting_max",
    "gap_closed": "gap_closed",
    "replayed_share": "replayed share",
    "general_share": "general share",
    "extra_forward_passes": "extra forwards",
    "train_tokens_per_s": "tokens/s",
    "wall_clock_s": "wall-clock s",
    "cpu_seconds": "CPU s",
    "peak_memory_mb": "peak MB",
}
DIGITS = {"gap_closed": 2, "replayed_share": 3, "general_share": 3, "extra_forward_passes": 0,
          "wall_clock_s": 0, "cpu_seconds": 0, "peak_memory_mb": 0,
          "train_tokens_per_s": 1}  # fmt: skip


def _fmt(value: float, name: str, signed: bool = False) -> str:
    digits = DIGITS.get(name, 2)
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def estimate_text(est: Estimate | None, name: str, signed: bool = False) -> str:
    """`12.34 [10.1, 14.2]`, `+1.20 [-0.5, +2.9]*` for a significant difference, `—` if none."""
    if est is None:
        return "—"
    text = _fmt(est.mean, name, signed)
    if est.low is not None and est.high is not None:
        text += f" [{_fmt(est.low, name, signed)}, {_fmt(est.high, name, signed)}]"
    if est.significant:
        text += "*"
    return text


def _shown(summary: BenchSummary, names: Sequence[str], table: str) -> list[str]:
    """Columns with at least one value (no `general_delta` without a general suite)."""
    source = getattr(summary, table)
    return [n for n in names if any(source.get(m, {}).get(n) for m in summary.methods)]


def _md_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def markdown(summary: BenchSummary, title: str) -> str:
    seeds = ", ".join(str(s) for s in summary.seeds)
    lines = [f"# {title}", "", f"Seeds: {seeds}. Each cell: mean over seeds with its 95 % "
             "interval over seeds and test examples.", ""]
    quality = _shown(summary, QUALITY, "quality")
    head = ["method", "seeds", *(f"{n} {arrow(n)}" for n in quality)]
    rows = []
    for m in summary.methods:
        n_seeds = len(summary.per_seed.get(m, {}))
        rows.append([m, str(n_seeds), *(estimate_text(summary.quality[m].get(n), n)
                                         for n in quality)])
    lines += _md_table(head, rows)
    diffs = [n for n in quality if n != "gap_closed"]
    if summary.differences:
        lines += ["", f"Paired difference against {BASELINE} (same seed, same test examples); "
                  "`*`: the interval excludes 0.", ""]
        rows = [[m, *(estimate_text(summary.differences[m].get(n), n, signed=True)
                      for n in diffs)] for m in summary.differences]
        lines += _md_table(["method", *diffs], rows)
    cost = _shown(summary, COST, "cost")
    if cost:
        lines += ["", "Cost per run (mean and t-interval over seeds).", ""]
        rows = [[m, *(estimate_text(summary.cost[m].get(n), n) for n in cost)]
                for m in summary.methods]
        lines += _md_table(["method", *(LABELS.get(n, n) for n in cost)], rows)
    lines += ["", *(f"Note: {note}" for note in summary.notes)] if summary.notes else []
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ("method", "kind", "metric", "mean", "low", "high", "n_seeds", "significant")


def csv_text(summary: BenchSummary) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for kind in ("quality", "differences", "cost"):
        table = getattr(summary, kind)
        for method, values in table.items():
            for name, est in values.items():
                if est is None:
                    continue
                writer.writerow([
                    method, "difference_vs_sequential" if kind == "differences" else kind, name,
                    repr(est.mean), "" if est.low is None else repr(est.low),
                    "" if est.high is None else repr(est.high), est.n_seeds,
                    "" if est.significant is None else str(est.significant).lower(),
                ])  # fmt: skip
    return buf.getvalue()


def summary_lines(summary: BenchSummary) -> list[str]:
    """What `retain bench` prints: the metrics table and the paired differences."""
    names = [n for n in ("ap", "bwt", "forgetting_max", "gap_closed")
             if any(summary.quality[m].get(n) for m in summary.methods)]
    width = max(len(m) for m in summary.methods) + 2
    lines = [f"{'method':<{width}}" + "".join(f"{n:>26}" for n in names)]
    for m in summary.methods:
        cells = "".join(f"{estimate_text(summary.quality[m].get(n), n):>26}" for n in names)
        lines.append(f"{m:<{width}}{cells}")
    lines.append(f"(mean over {len(summary.seeds)} seed(s); 95 % interval over seeds and test "
                 "examples)")
    if summary.differences:
        lines.append(f"paired difference against {BASELINE} (* = significant):")
        for m, diffs in summary.differences.items():
            parts = [f"{n} {estimate_text(diffs.get(n), n, signed=True)}"
                     for n in ("ap", "bwt", "forgetting_max") if diffs.get(n)]
            lines.append(f"  {m}: " + ("; ".join(parts) or "no metric to compare"))
    lines += [f"note: {note}" for note in summary.notes]
    return lines
