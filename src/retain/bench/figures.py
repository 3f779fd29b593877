"""The bench's figures: mean score matrices side by side, `ap_per_stage` curves with bands,
per-task forgetting bars, and cost against `gap_closed` (what a method buys for its price)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from retain.bench.aggregate import BenchSummary, Estimate, gap_resolved
from retain.eval.matrix import ScoreMatrix
from retain.eval.stats import estimate
from retain.results import figures
from retain.results.figures import new_figure, plain, save

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def mean_matrix(summary: BenchSummary, method: str) -> ScoreMatrix | None:
    """The score matrix averaged over the method's seeds (cells blank where none scored it)."""
    runs = [summary.runs[(method, s)] for s in summary.seeds if (method, s) in summary.runs]
    if not runs:
        return None
    out = ScoreMatrix(runs[0].tasks, runs[0].general)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells stay NaN
        out.R = np.nanmean(np.stack([r.matrix.R for r in runs]), axis=0)
    return out


def stage_curve(summary: BenchSummary, method: str) -> figures.Curve | None:
    """Mean `ap_per_stage` over seeds with the t-interval over seeds at every stage (the band
    is left out for one seed: there is no spread to show)."""
    runs = [summary.runs[(method, s)] for s in summary.seeds if (method, s) in summary.runs]
    curves = [r.metrics.get("ap_per_stage") or [] for r in runs]
    if not curves or not all(curves) or len({len(c) for c in curves}) != 1:
        return None
    values, bands = [], []
    for t in range(len(curves[0])):
        est = estimate([float(c[t]) for c in curves])
        values.append(est.mean)
        bands.append({} if est.low is None else {"low": est.low, "high": est.high})
    return (method, values, bands if all(bands) else [])


def task_forgetting(matrix: ScoreMatrix) -> list[float]:
    """Per task j < T: max over stages j..T−1 of R[l, j] minus R[T, j] (forgetting_max's terms)."""
    T = matrix.num_tasks
    R = matrix.R
    return [float(np.nanmax(R[j : T, j - 1]) - R[T, j - 1]) for j in range(1, T)]


def forgetting_figure(summary: BenchSummary) -> Figure | None:
    per_method = {}
    for m in summary.methods:
        runs = [summary.runs[(m, s)] for s in summary.seeds if (m, s) in summary.runs]
        done = [r for r in runs if r.matrix.rows_done() > r.matrix.num_tasks]
        rows = [task_forgetting(r.matrix) for r in done]
        if rows and rows[0]:
            per_method[m] = [estimate([row[j] for row in rows]) for j in range(len(rows[0]))]
    if not per_method:
        return None
    tasks = next(summary.runs[k] for k in summary.runs).tasks[:-1]
    fig = new_figure(max(6.0, 1.2 + 0.5 * len(tasks) * len(per_method) ** 0.5), 4.0)
    ax = fig.add_subplot()
    width = 0.8 / len(per_method)
    for k, (m, ests) in enumerate(per_method.items()):
        xs = np.arange(len(ests)) + (k - (len(per_method) - 1) / 2) * width
        means = [e.mean for e in ests]
        err = _errors(ests)
        ax.bar(xs, means, width, label=plain(m), color=f"C{k % 10}", yerr=err, capsize=2)
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_xticks(range(len(tasks)), labels=[plain(t) for t in tasks], rotation=30, ha="right")
    ax.set_ylabel("forgetting (best earlier score − final), points")
    ax.legend(fontsize=8, title="papers' plug-in, biased ↑ at small n; error bars: 95 % "
              "t-interval over seeds (none for one seed)", title_fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    return fig


def _errors(ests: list[Estimate]) -> np.ndarray | None:
    if any(e.low is None or e.high is None for e in ests):
        return None
    return np.array([[e.mean - e.low for e in ests], [e.high - e.mean for e in ests]])  # type: ignore[operator]


def cost_figure(summary: BenchSummary) -> Figure | None:
    """Seconds per run (CPU time where every method has it, else wall-clock) against
    gap_closed, one point a method; against ap where no references ran or multitask did not
    beat sequential (no gap to close)."""
    has_gap = any(summary.quality[m].get("gap_closed") for m in summary.methods)
    metric = "gap_closed" if has_gap and gap_resolved(summary) else "ap"
    # CPU time where every method has it: wall-clock also measures whatever shared the machine
    clock = "cpu_seconds" if all(summary.cost[m].get("cpu_seconds") for m in summary.methods) \
        else "wall_clock_s"
    points = [
        (m, summary.cost[m].get(clock), summary.quality[m].get(metric)) for m in summary.methods
    ]
    points = [(m, x, y) for m, x, y in points if x is not None and y is not None]
    if not points:
        return None
    fig = new_figure(7.8, 4.2)
    ax = fig.add_subplot()
    for k, (m, x, y) in enumerate(points):
        ax.errorbar([x.mean], [y.mean], xerr=_errors([x]), yerr=_errors([y]), fmt="o",
                    color=f"C{k % 10}", capsize=3, label=plain(m))
    # a legend, not labels at the points: methods of similar cost would print over each other
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_xlabel(f"{'CPU' if clock == 'cpu_seconds' else 'wall-clock'} seconds per run "
                  "(train + evaluation)")
    ax.set_ylabel(metric + (" (0 = sequential, 1 = multitask)" if metric == "gap_closed" else ""))
    ax.grid(alpha=0.3)
    return fig


def write_figures(summary: BenchSummary, out_dir: Path) -> list[tuple[str, str]]:
    """PNG files in `out_dir`, as (file name, caption)."""
    made: list[tuple[str, str]] = []
    matrices = [(m, mean_matrix(summary, m)) for m in summary.methods]
    shown = [(m, x) for m, x in matrices if x is not None]
    if shown:
        fig = figures.matrices_figure([x for _, x in shown], [m for m, _ in shown])
        save(fig, out_dir / "bench_matrices.png")
        made.append(("bench_matrices.png", "score matrices, mean over seeds, one colour scale"))
    curves = [c for m in summary.methods if (c := stage_curve(summary, m)) is not None]
    if curves:
        save(figures.stage_curves_figure(curves, "95 % t-interval over seeds"),
             out_dir / "bench_ap_per_stage.png")
        band = ("shaded: 95 % t-interval over training seeds (the tables' intervals also count "
                "the test examples)" if len(summary.seeds) > 1 else "one seed: no band")
        made.append(("bench_ap_per_stage.png", f"ap_per_stage, mean over seeds; {band}"))
    for name, builder, caption in (
        ("bench_forgetting.png", forgetting_figure, "forgetting of each task at the end (the "
         "papers' plug-in per task, biased upward at small n)"),
        ("bench_cost.png", cost_figure, "cost against gap_closed"),
    ):
        fig = builder(summary)
        if fig is not None:
            save(fig, out_dir / name)
            made.append((name, caption))
    return made
