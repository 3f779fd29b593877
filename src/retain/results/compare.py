"""The comparison of runs: `comparison.html` plus the same table as Markdown and CSV.

It answers "which run is better, and is that real": every metric with its 95 % interval and
the best run per metric highlighted (in the metric's own direction), then the paired difference
of each run against the first (the baseline) with its paired bootstrap interval, significant
ones marked, and seeds of one configuration combined. Figures put the score matrices side by
side on one colour scale and overlay the `ap_per_stage` curves with their bands.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from retain.eval.metrics import COST_NAMES, METRIC_NAMES
from retain.eval.stats import ONE_SEED
from retain.results import figures
from retain.results.compare_tables import (
    FAMILY_NOTE,
    PLUGIN_NOTE,
    comparison_csv,
    comparison_markdown,
    comparison_records,
    paired_runs,
)
from retain.results.html import e, figure, fmt, page, points, table, value_ci_html
from retain.results.paired import Pairing, SeedGroup, pair_all, seed_groups, verdict
from retain.results.view import (
    HEADLINE,
    RunView,
    arrow,
    direction_text,
    general_delta_names,
    higher_is_better,
    label,
)
from retain.storage.files import write_text_atomic

BAR_METRICS: tuple[str, ...] = ("ap", "la", "bwt", "forgetting_max_xfit", "fwt")
"""Metrics of the bar chart: all in score points, so they share one axis."""

def compare_runs(run_dirs: list[Path], out_dir: Path) -> Path:
    """Write `comparison.html` (+ PNGs, `comparison.md`, `comparison.csv`) into `out_dir`."""
    if not run_dirs:
        raise ValueError("compare_runs needs at least one run directory")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = [RunView(Path(d)) for d in run_dirs]
    labels = unique_labels(runs)
    pairings: list[Pairing | None] = pair_all(runs)
    groups = seed_groups(runs)
    candidates = [*HEADLINE, *general_delta_names(runs)]
    names = [n for n in candidates if any(r.value(n) is not None for r in runs)]
    unpaired = [(labels[k], p.reason) for k, p in enumerate(pairings) if p and p.reason]
    best = {n: set() if unpaired else best_runs(runs, n) for n in names}  # no ranking unpaired
    if unpaired:
        who, why = unpaired[0]
        print(f"warning: {who} cannot be paired with {labels[0]} ({why}); the comparison "
              "shows each run's values, ranks none and computes no difference", file=sys.stderr)

    parts = ["<h1>retain: comparison of runs</h1>", _runs_list(runs, labels, out_dir)]
    parts.append(_notes(runs, labels))
    parts.append("<h2>Metrics</h2>")
    parts.append(
        f"<p>Point value with its 95 % interval {ONE_SEED} (each run alone); the best run per "
        "metric is highlighted (↑ higher is better, ↓ lower is better; normalized_avg ×100). "
        f"{PLUGIN_NOTE}</p>"
    )
    parts.append(_metrics_table(runs, labels, names, best))
    if len(runs) > 1:
        parts.append(f"<h2>Paired difference against the baseline {e(labels[0])}</h2>")
        parts.append(_difference_section(runs, labels, names, pairings))
        from retain.results.two_scores_html import two_scores_comparison

        parts.append(two_scores_comparison(runs, labels))
    if groups:
        parts.append("<h2>Seeds of one configuration</h2>")
        parts.append(_seeds_section(groups, labels, names))
    parts.append("<h2>Figures</h2>")
    parts.extend(figure(src, caption) for src, caption in _figures(runs, labels, out_dir))
    parts.append("<h2>Cost</h2>")
    parts.append(_cost_table(runs, labels))
    parts.append("<h2>Definitions</h2>")
    defs = runs[0].definitions()
    parts.append(
        table(
            ["metric", "definition"],
            [[f"<code>{e(n)}</code>", (e(defs.get(n, "")), "def")] for n in METRIC_NAMES],
            left=2,
        )
    )
    out = out_dir / "comparison.html"
    write_text_atomic(out, page("retain: comparison of runs", parts))
    records = comparison_records(runs, labels, names, best, pairings)
    write_text_atomic(out_dir / "comparison.csv", comparison_csv(records))
    write_text_atomic(
        out_dir / "comparison.md", comparison_markdown(runs, labels, names, best, pairings, groups)
    )
    return out


def unique_labels(runs: Sequence[RunView]) -> list[str]:
    """Run names, disambiguated by directory when two runs share a name."""
    names = [r.name for r in runs]
    return [
        n if names.count(n) == 1 else f"{n} ({r.dir})" for r, n in zip(runs, names, strict=True)
    ]


def best_runs(runs: Sequence[RunView], name: str) -> set[int]:
    """Indices of the best run(s) for one metric in its direction; none with fewer than two
    values or when all tie (then no run is better than another)."""
    values = {k: v for k, r in enumerate(runs) if (v := r.value(name)) is not None}
    if len(values) < 2:
        return set()
    top = max(values.values()) if higher_is_better(name) else min(values.values())
    best = {k for k, v in values.items() if abs(v - top) <= 1e-9 * max(1.0, abs(top))}
    return best if len(best) < len(values) else set()  # all tied: nobody stands out


# ---- page sections ----


def _runs_list(runs: Sequence[RunView], labels: Sequence[str], out_dir: Path) -> str:
    items = []
    for k, (name, run) in enumerate(zip(labels, runs, strict=True)):
        report = run.dir / "report.html"
        link = e(name)
        if report.exists():
            link = f'<a href="{e(Path(os.path.relpath(report, out_dir)).as_posix())}">{e(name)}</a>'
        facts = [f"seed {e(run.seed)}"] if run.seed is not None else []
        sha = run.environment.get("git_sha")
        facts.append(f"git <code>{e(sha)}</code>" if sha else "git SHA unknown")
        counts = [n for t, n in run.n_per_task.items() if t in run.tasks]
        if counts:
            facts.append(f"{min(counts)}–{max(counts)} test examples per task")
        base = " <strong>(baseline)</strong>" if k == 0 and len(runs) > 1 else ""
        items.append(f"<li>{link}{base}: {e(run.dir)} · {' · '.join(facts)}</li>")
    return f"<ul>{''.join(items)}</ul>"


def _notes(runs: Sequence[RunView], labels: Sequence[str]) -> str:
    """Small-test-set notes, warnings and unreadable files, each said once for all its runs."""
    noise: dict[str, list[str]] = {}
    notes: dict[str, list[str]] = {}
    for name, run in zip(labels, runs, strict=True):
        if run.noise:
            noise.setdefault(run.noise, []).append(name)
        for text in [*(f"warning: {w}" for w in run.warnings), *run.problems]:
            notes.setdefault(text, []).append(name)
    out = [
        f'<p class="noise"><strong>Small test sets ({e(", ".join(names))}).</strong> {e(text)}</p>'
        for text, names in noise.items()
    ]
    out += [f'<p class="note">{e(", ".join(n))}: {e(t)}</p>' for t, n in notes.items()]
    return "".join(out)


def _metrics_table(
    runs: Sequence[RunView], labels: Sequence[str], names: Sequence[str], best: dict[str, set[int]]
) -> str:
    rows = []
    for n in names:
        cells: list[Any] = [f"<code>{e(label(n))}</code>", _arrow_html(n)]
        for k, run in enumerate(runs):
            html = value_ci_html(run.value(n), *run.bounds(n))
            cells.append((html, "best") if k in best[n] else html)
        rows.append(cells)
    head = ["metric", "better", *(e(lb) for lb in labels)]
    return table(head, rows)


def _difference_section(
    runs: Sequence[RunView],
    labels: Sequence[str],
    names: Sequence[str],
    pairings: Sequence[Pairing | None],
) -> str:
    base = labels[0]
    paired = paired_runs(pairings)
    notes = [
        f"<li>{e(labels[k])} is not paired with {e(base)}: {e(p.reason)}</li>"
        for k, p in enumerate(pairings)
        if p is not None and p.differences is None
    ] + [f"<li>{e(labels[k])}: {e(p.note)}</li>" for k, p in enumerate(pairings) if p and p.note]
    intro = (
        f"<p>Each run minus {e(base)}, with a 95 % paired interval over the same test examples "
        "(one resample shared by both runs), conditional on the runs' training seeds. "
        f"<strong>*</strong> marks a significant difference: {e(FAMILY_NOTE)}; green is "
        "better, red worse in the metric's direction.</p>"
    )
    if not paired:
        return intro + f"<ul>{''.join(notes)}</ul>"
    rows = []
    for n in names:
        cells: list[Any] = [f"<code>{e(label(n))}</code>", _arrow_html(n)]
        for _, diffs in paired:
            d = diffs.get(n)
            if d is None:
                cells.append("n/a")
                continue
            html = value_ci_html(d["value"], d["low"], d["high"], signed=True)
            cls = " ".join(c for c in ("sig" if d["significant"] else "", verdict(n, d)) if c)
            cells.append((html + (" *" if d["significant"] else ""), cls))
        rows.append(cells)
    head = ["metric", "better", *(f"{e(labels[k])} − {e(base)}" for k, _ in paired)]
    return intro + table(head, rows) + (f"<ul>{''.join(notes)}</ul>" if notes else "")


def _seeds_section(groups: Sequence[SeedGroup], labels: Sequence[str], names: Sequence[str]) -> str:
    parts = [
        "<p>Runs whose configurations differ only in <code>seed</code> (name and output_dir "
        "aside), combined as mean over seeds with a 95 % t-interval.</p>"
    ]
    for g in groups:
        members = ", ".join(f"{labels[k]} (seed {g.seeds[j]})" for j, k in enumerate(g.members))
        rows = []
        for n in names:
            s = g.summary.get(n)
            if s is None:
                continue
            rows.append(
                [
                    f"<code>{e(label(n))}</code>",
                    _arrow_html(n),
                    value_ci_html(s["mean"], s["low"], s["high"]),
                    e(points(s["std"])),
                    e(s["n_seeds"]),
                ]
            )
        parts.append(f"<p>{e(members)}</p>")
        parts.append(table(["metric", "better", "mean [95 % CI]", "std", "seeds"], rows))
    return "".join(parts)


def _figures(
    runs: Sequence[RunView], labels: Sequence[str], out_dir: Path
) -> list[tuple[str, str]]:
    out = []
    with_matrix = [(lb, r.matrix) for lb, r in zip(labels, runs, strict=True) if r.matrix]
    if with_matrix:
        fig = figures.matrices_figure([m for _, m in with_matrix], [lb for lb, _ in with_matrix])
        figures.save(fig, out_dir / "comparison_matrices.png")
        caption = "Score matrices side by side (one colour scale; blank: not evaluated)"
        if max(m.num_tasks for _, m in with_matrix) > figures.NUMBERS_UP_TO:
            caption += "; colours only for a long stream, each run's report has the numbers"
        out.append(("comparison_matrices.png", caption))
    curves = [
        (lb, aps, r.ap_per_stage_ci)
        for lb, r in zip(labels, runs, strict=True)
        if isinstance(aps := r.metrics.get("ap_per_stage"), list) and aps
    ]
    if curves:
        figures.save(figures.stage_curves_figure(curves), out_dir / "comparison_curves.png")
        out.append(("comparison_curves.png", "ap_per_stage of each run, shaded: its 95 % "
                    f"interval {ONE_SEED}"))
    bars = [[(r.value(n), *r.bounds(n)) for n in BAR_METRICS] for r in runs]
    figures.save(figures.metrics_bar_figure(BAR_METRICS, labels, bars), out_dir / "comparison.png")
    out.append(("comparison.png", ", ".join(BAR_METRICS) + f" per run, whiskers: 95 % interval "
                f"{ONE_SEED}"))
    return out


def _cost_table(runs: Sequence[RunView], labels: Sequence[str]) -> str:
    rows = [
        [e(n), *(e(fmt(r.cost.get(n))) for r in runs)]
        for n in COST_NAMES
        if n != "seconds_per_task"
    ]
    rows.append(
        [
            "stages done",
            *(
                f"{e(fmt(r.metrics.get('last_stage')))} / {e(fmt(r.metrics.get('num_tasks')))}"
                for r in runs
            ),
        ]
    )
    return table(["cost", *(e(lb) for lb in labels)], rows)


def _arrow_html(name: str) -> tuple[str, str]:
    """The direction arrow as a centred cell, its meaning in the tooltip."""
    return f'<span class="dir" title="{e(direction_text(name))}">{arrow(name)}</span>', "c"
