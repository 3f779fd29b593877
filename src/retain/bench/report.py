"""Writing a bench's comparison: `bench.md`, `bench.csv`, `bench.html` and its PNG figures in
the bench directory, and `bench.<score>.md`/`.csv` per score when the runs carry both;
`retain report` calls the same code to re-render it at any time, and to compare benches whose
streams and test data match."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from retain.bench.aggregate import (
    BASELINE,
    COST,
    QUALITY,
    BenchSummary,
    SeedRun,
    load_bench,
    summarise,
)
from retain.bench.figures import write_figures
from retain.bench.table import (
    CLAIM_HEAD,
    CLAIMS_CAPTION,
    LABELS,
    SEED_CAPTION,
    claim_rows,
    csv_text,
    difference_caption,
    estimate_text,
    interval_caption,
    markdown,
    seed_difference_table,
    seed_sd_text,
)
from retain.bench.two_scores import by_score
from retain.results.html import e, figure, page, table
from retain.results.view import arrow
from retain.storage.files import write_text_atomic
from retain.storage.fingerprint import fingerprint_differences

COMPARABLE_PARTS = ("stream", "subsample", "test_data")
"""What runs of different benches must share to sit in one table: the very test examples."""


def write_bench_report(
    summary: BenchSummary,
    out_dir: Path,
    title: str,
    by_score: Mapping[str, BenchSummary] | None = None,
) -> Path:
    """`bench.md`, `bench.csv` and `bench.html` of the primary scores; with `by_score`
    (`two_scores.by_score`), the same tables for each score as `bench.<score>.md`/`.csv`, so
    a bench scored both ways keeps both in files, not only in what it printed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "bench.md", markdown(summary, title))
    write_text_atomic(out_dir / "bench.csv", csv_text(summary))
    for score, scored in (by_score or {}).items():
        write_text_atomic(out_dir / f"bench.{score}.md", markdown(scored, f"{title}, by {score}"))
        write_text_atomic(out_dir / f"bench.{score}.csv", csv_text(scored))
    made = write_figures(summary, out_dir)
    parts = [f"<h1>{e(title)}</h1>", _html_tables(summary)]
    parts += [f"<p class='note'>{e(n)}</p>" for n in summary.notes]
    parts.append("<h2>Figures</h2>")
    parts += [figure(name, caption) for name, caption in made]
    parts.append("<h2>Runs</h2>")
    parts.append(
        table(
            ["method", "seed", "run directory"],
            [[e(r.method), str(r.seed), f'<a href="{e(_rel(r.dir, out_dir))}/report.html">'
              f"{e(_rel(r.dir, out_dir))}</a>"] for r in summary.runs.values()],
            left=3,
        )
    )
    out = out_dir / "bench.html"
    write_text_atomic(out, page(title, parts))
    return out


def _rel(path: Path, start: Path) -> str:
    import os

    return os.path.relpath(path, start)


def _html_tables(summary: BenchSummary) -> str:
    quality = [n for n in QUALITY if any(summary.quality[m].get(n) for m in summary.methods)]
    rows = [[e(m), *(e(estimate_text(summary.quality[m].get(n), n)) for n in quality),
             e(seed_sd_text(summary, m))] for m in summary.methods]
    html = f"<h2>Metrics</h2><p>{e(interval_caption(summary))}</p>" + table(
        ["method", *(e(f"{LABELS.get(n, n)} {arrow(n)}") for n in quality), "seed SD of ap"],
        rows)
    if summary.differences:
        diffs = [n for n in quality
                 if n != "gap_closed" and any(summary.differences[m].get(n)
                                              for m in summary.differences)]
        rows = []
        for m, values in summary.differences.items():
            row = []
            for n in diffs:
                est = values.get(n)
                text = e(estimate_text(est, n, signed=True))
                row.append((text, "sig") if est is not None and est.significant else text)
            rows.append([e(m), *row])
        html += (f"<h2>Paired difference against {BASELINE}</h2>"
                 f"<p>{e(difference_caption())}</p>"
                 + table(["method", *(e(LABELS.get(n, n)) for n in diffs)], rows))
    head, rows = seed_difference_table(summary)
    if rows:
        html += (f"<h2>Per seed: paired difference against {BASELINE}</h2>"
                 f"<p>{e(SEED_CAPTION)}</p>"
                 + table([e(h) for h in head], [[e(c) for c in row] for row in rows]))
    cost = [n for n in COST if any(summary.cost[m].get(n) for m in summary.methods)]
    if cost:
        rows = [[e(m), *(e(estimate_text(summary.cost[m].get(n), n)) for n in cost)]
                for m in summary.methods]
        html += "<h2>Cost</h2>" + table(["method", *(LABELS.get(n, n) for n in cost)], rows)
    if summary.claims:
        html += (f"<h2>The papers' orderings</h2><p>{e(CLAIMS_CAPTION)}</p>"
                 + table(list(CLAIM_HEAD), [[e(c) for c in row] for row in claim_rows(summary)]))
    return html


def bench_summaries(root: Path) -> tuple[BenchSummary, dict[str, BenchSummary]]:
    """A bench directory's summary by its primary scores, and by each score its runs carry."""
    methods, seeds, runs = load_bench(root)
    if not runs:
        raise ValueError(f"{root}: no finished run of the bench yet")
    return summarise(methods, seeds, runs), by_score(methods, seeds, runs)


def render_bench(root: Path) -> Path:
    """Re-render one bench directory from its runs."""
    summary, scored = bench_summaries(root)
    return write_bench_report(summary, root, f"retain bench: {Path(root).name}", scored)


def compare_benches(roots: list[Path], out_dir: Path) -> Path:
    """One comparison of several benches' methods, refused unless their test data match."""
    methods: list[str] = []
    seeds: list[int] = []
    runs: dict[tuple[str, int], SeedRun] = {}
    first: SeedRun | None = None
    for root in roots:
        names, bench_seeds, bench_runs = load_bench(root)
        for run in bench_runs.values():
            if first is None:
                first = run
            diffs = fingerprint_differences(
                first.metrics.get("fingerprint") or {}, run.metrics.get("fingerprint") or {},
                COMPARABLE_PARTS,
            )
            if diffs:
                raise ValueError(
                    f"cannot compare {run.dir} with {first.dir}: {'; '.join(diffs)}; benches "
                    "are compared only on the same stream and test examples"
                )
            label = run.method
            if (label, run.seed) in runs:  # the same method in two benches: name both
                label = f"{run.method}@{Path(root).name}"
            runs[(label, run.seed)] = run
            if label not in methods:
                methods.append(label)
        seeds += [s for s in bench_seeds if s not in seeds]
    if not runs:
        raise ValueError("no finished runs in " + ", ".join(str(r) for r in roots))
    order = [m for m in methods if m == BASELINE] + [m for m in methods if m != BASELINE]
    summary = summarise(order, seeds, runs)
    return write_bench_report(summary, Path(out_dir), "retain: comparison of benches")
