"""The bench comparison as text: Markdown and CSV tables, and the lines the command prints.

One row per method: every metric as `mean [low, high]` (95 %; over seeds and test examples, or
with one seed over test examples conditional on that seed: `stats.scope_text`), the papers'
plug-in `forgetting_max` as a point value beside its cross-fit, the seed standard deviation
the bench found, then the paired difference against `sequential` with `*` where it is
significant after multiplicity control (Holm for `ap`, Benjamini–Hochberg for the rest), then
the per-seed differences, then the cost. The CSV holds the same numbers in long form, one line
per method, metric and kind.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from retain.bench.aggregate import (
    BASELINE,
    COST,
    PRIMARY,
    QUALITY,
    SEED_DIFFERENCES,
    BenchSummary,
    Estimate,
)
from retain.eval.stats import scope_text
from retain.results.view import arrow

LABELS = {
    "bwt_format": "bwt: format",
    "bwt_knowledge": "bwt: knowledge",
    "forgetting_max_xfit": "forgetting_max (cross-fit)",
    "forgetting_max": "forgetting_max (papers' plug-in, biased ↑ at small n)",
    "gap_closed": "gap_closed",
    "replayed_share": "replayed share",
    "general_share": "general share",
    "extra_forward_passes": "extra forwards",
    "train_tokens": "trained tokens",
    "train_tokens_per_s": "tokens/s",
    "wall_clock_s": "wall-clock s",
    "cpu_seconds": "CPU s",
    "peak_memory_mb": "peak MB",
}
DIGITS = {"gap_closed": 2, "replayed_share": 3, "general_share": 3, "extra_forward_passes": 0,
          "train_tokens": 0,
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


def interval_caption(summary: BenchSummary) -> str:
    """What every interval of the bench covers, with the plug-in caveat."""
    k = max((len(v) for v in summary.per_seed.values()), default=len(summary.seeds))
    text = (f"Each cell: mean over seeds with its 95 % interval {scope_text(k)} (crossed "
            "seed × example estimator, Satterthwaite df, small-n corrected)." if k > 1 else
            f"One seed. Each cell: the run's value with its 95 % interval {scope_text(k)} (t "
            "interval, small-n corrected); it says nothing about other seeds.")
    return text + (" forgetting_max (cross-fit) is the headline; the papers' plug-in is shown "
                   "beside it as a point value: a max over noisy scores, biased upward at "
                   "small n. gap_closed is descriptive (no test).")


def difference_caption() -> str:
    return (f"Paired difference against {BASELINE} (same seed, same test examples; 95 % "
            f"interval, unadjusted). `*`: significant after multiplicity control — {PRIMARY}: "
            "Holm across the methods (primary comparison; multitask, a reference, is in the "
            "secondary family); every other column: Benjamini–Hochberg across all secondary "
            "differences of the table.")


def seed_sd_text(summary: BenchSummary, method: str) -> str:
    """The seed standard deviation of `ap` the crossed estimator found (— below 2 seeds)."""
    est = summary.quality.get(method, {}).get(PRIMARY)
    return "—" if est is None or est.seed_sd is None else f"{est.seed_sd:.2f}"


def markdown(summary: BenchSummary, title: str) -> str:
    seeds = ", ".join(str(s) for s in summary.seeds)
    lines = [f"# {title}", "", f"Seeds: {seeds}. {interval_caption(summary)}", ""]
    quality = _shown(summary, QUALITY, "quality")
    head = ["method", "seeds", *(f"{LABELS.get(n, n)} {arrow(n)}" for n in quality),
            "seed SD of ap"]
    rows = []
    for m in summary.methods:
        n_seeds = len(summary.per_seed.get(m, {}))
        rows.append([m, str(n_seeds), *(estimate_text(summary.quality[m].get(n), n)
                                         for n in quality), seed_sd_text(summary, m)])
    lines += _md_table(head, rows)
    diffs = [n for n in quality if n != "gap_closed" and not _plugin(summary, n)]
    if summary.differences:
        lines += ["", difference_caption(), ""]
        rows = [[m, *(estimate_text(summary.differences[m].get(n), n, signed=True)
                      for n in diffs)] for m in summary.differences]
        lines += _md_table(["method", *(LABELS.get(n, n) for n in diffs)], rows)
    lines += seed_difference_lines(summary)
    cost = _shown(summary, COST, "cost")
    if cost:
        lines += ["", "Cost per run (mean and t-interval over seeds).", ""]
        rows = [[m, *(estimate_text(summary.cost[m].get(n), n) for n in cost)]
                for m in summary.methods]
        lines += _md_table(["method", *(LABELS.get(n, n) for n in cost)], rows)
    if summary.claims:
        lines += ["", CLAIMS_CAPTION, ""]
        lines += _md_table(CLAIM_HEAD, claim_rows(summary))
    lines += ["", *(f"Note: {note}" for note in summary.notes)] if summary.notes else []
    return "\n".join(lines) + "\n"


SEED_CAPTION = (
    f"Per seed: paired difference against {BASELINE} on each seed alone (95 % interval over "
    "that seed's test examples, conditional on the seed; `*`: the interval excludes 0, "
    "unadjusted): whether an effect keeps its sign from seed to seed, which the interval over "
    "seeds cannot show with few seeds."
)


def seed_difference_table(summary: BenchSummary) -> tuple[list[str], list[list[str]]]:
    """Head and rows of the per-seed table (no rows for a one-seed bench: its differences are
    per seed already)."""
    head, cells = ["method"], []
    for name in SEED_DIFFERENCES:
        head += [f"{name}, seed {s}" for s in summary.seeds]
        cells += [(name, s) for s in summary.seeds]
    rows = [[m, *(estimate_text(per.get(s, {}).get(n), n, signed=True) for n, s in cells)]
            for m, per in summary.seed_differences.items()]
    return head, rows


def seed_difference_lines(summary: BenchSummary) -> list[str]:
    head, rows = seed_difference_table(summary)
    return ["", SEED_CAPTION, "", *_md_table(head, rows)] if rows else []


CLAIMS_CAPTION = (
    f"The papers' orderings on this bench: paired difference better − worse on {PRIMARY} (same "
    "seeds, same test examples; 95 % interval, unadjusted), `*` significant after Holm within "
    "each paper's claims. `>` claims: reproduced, reversed or unresolved; `≈` claims: differ, "
    "or no difference resolved (which is not evidence of equality)."
)
CLAIM_HEAD = ("paper", "claim", f"difference in {PRIMARY}", "verdict")


def claim_rows(summary: BenchSummary) -> list[list[str]]:
    return [[r.claim.paper, r.text, estimate_text(r.difference, PRIMARY, signed=True),
             r.verdict] for r in summary.claims]  # fmt: skip


def _plugin(summary: BenchSummary, name: str) -> bool:
    """A point-value-only column (the papers' plug-in)."""
    return all((e := summary.quality[m].get(name)) is None or e.low is None
               for m in summary.methods) and any(summary.quality[m].get(name)
                                                 for m in summary.methods)


CSV_COLUMNS = ("method", "kind", "metric", "mean", "low", "high", "n_seeds", "significant",
               "p", "correction", "seed_sd")  # fmt: skip


def _blank(value: float | None) -> str:
    return "" if value is None else repr(value)


def _csv_row(method: str, kind: str, name: str, est: Estimate) -> list[object]:
    significant = "" if est.significant is None else str(est.significant).lower()
    return [method, kind, name, repr(est.mean), _blank(est.low), _blank(est.high), est.n_seeds,
            significant, _blank(est.p), est.correction or "", _blank(est.seed_sd)]  # fmt: skip


def csv_text(summary: BenchSummary) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for kind in ("quality", "differences", "cost"):
        label = "difference_vs_sequential" if kind == "differences" else kind
        for method, values in getattr(summary, kind).items():
            writer.writerows(_csv_row(method, label, name, est)
                             for name, est in values.items() if est is not None)  # fmt: skip
    for method, per in summary.seed_differences.items():
        for seed, values in per.items():
            writer.writerows(_csv_row(method, f"difference_vs_sequential:seed{seed}", name, est)
                             for name, est in values.items() if est is not None)  # fmt: skip
    for result in summary.claims:  # the papers' orderings: the claim in the method column
        if result.difference is not None:
            kind = f"paper_claim:{result.claim.paper}"
            writer.writerow(_csv_row(result.text, kind, PRIMARY, result.difference))
    return buf.getvalue()


def summary_lines(summary: BenchSummary) -> list[str]:
    """What `retain bench` prints: the metrics table and the paired differences."""
    names = [n for n in ("ap", "bwt", "forgetting_max_xfit", "gap_closed")
             if any(summary.quality[m].get(n) for m in summary.methods)]
    width = max(len(m) for m in summary.methods) + 2
    lines = [f"{'method':<{width}}" + "".join(f"{n:>26}" for n in names)]
    for m in summary.methods:
        cells = "".join(f"{estimate_text(summary.quality[m].get(n), n):>26}" for n in names)
        lines.append(f"{m:<{width}}{cells}")
    k = len(summary.seeds)
    lines.append(f"({f'mean over {k} seeds' if k > 1 else 'one seed'}; 95 % interval "
                 f"{scope_text(k)}; forgetting_max_xfit: cross-fitted)")
    if summary.differences:
        lines.append(f"paired difference against {BASELINE} (* = significant; {PRIMARY}: Holm "
                     "across methods, others: Benjamini–Hochberg):")
        for m, diffs in summary.differences.items():
            parts = [f"{n} {estimate_text(diffs.get(n), n, signed=True)}"
                     for n in ("ap", "bwt", "forgetting_max_xfit") if diffs.get(n)]
            lines.append(f"  {m}: " + ("; ".join(parts) or "no metric to compare"))
    if summary.claims:
        lines.append(f"the papers' orderings ({PRIMARY}, better − worse, Holm within each paper):")
        lines += [f"  {paper}: {claim} {diff} — {verdict}"
                  for paper, claim, diff, verdict in claim_rows(summary)]
    lines += [f"note: {note}" for note in summary.notes]
    return lines
