"""The report's matplotlib figures, one concept per figure and no panel drawn twice.

Drawn with matplotlib's object API on the Agg canvas (no pyplot), so the user's global backend
is never touched. Cells that were not evaluated (NaN, e.g. above the superdiagonal with
`eval.cells=needed`) stay blank in heatmaps and break curves instead of reading as zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from retain.eval.matrix import ScoreMatrix
from retain.storage.files import replaced_atomically

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

HEATMAP_COLUMNS = 3
"""Side-by-side heatmaps per figure row in a comparison (2 for long streams)."""

NUMBERS_UP_TO = 8
"""Side-by-side heatmaps of longer streams show colours only: the numbers would be too small to
read; each run's own report has them."""


def new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def save(fig: Figure, path: Path) -> None:
    """Write via a temp name so a reader never sees half a PNG."""
    with replaced_atomically(path) as tmp:
        fig.savefig(tmp, format="png")


def plain(text: Any) -> str:
    """Figure text shown literally: a task named 'a$b$' must not turn into mathtext."""
    return str(text).replace("$", r"\$")


def _range(arrays: Sequence[np.ndarray]) -> tuple[float, float]:
    """Common colour scale of several matrices (0–100 when nothing is finite)."""
    finite = [a[np.isfinite(a)] for a in arrays]
    values = np.concatenate(finite) if finite else np.array([])
    if not values.size:
        return 0.0, 100.0
    lo, hi = float(values.min()), float(values.max())
    return (lo, hi) if hi > lo else (lo - 1.0, hi + 1.0)


def _heatmap(
    ax: Axes, matrix: ScoreMatrix, vmin: float, vmax: float, title: str = "", numbers: bool = True
) -> Any:
    from matplotlib import colormaps

    T = matrix.num_tasks
    cmap = colormaps["viridis"].with_extremes(bad="white")
    im = ax.imshow(np.ma.masked_invalid(matrix.R), cmap=cmap, aspect="auto", vmin=vmin, vmax=vmax)
    ax.set_xticks(range(T), labels=[plain(t) for t in matrix.tasks], rotation=30, ha="right")
    ax.set_yticks(range(T + 1), labels=["base", *(f"after {plain(t)}" for t in matrix.tasks)])
    ax.set_xlabel("evaluated task")
    ax.set_ylabel("stage")
    if title:
        ax.set_title(plain(title), fontsize=10)
    mid = (vmin + vmax) / 2
    size = 9 if T <= 6 else (7 if T <= 10 else 5)
    for t in range(T + 1):
        for i in range(T):
            v = matrix.R[t, i]
            if numbers and math.isfinite(v):  # blank cells stay blank: not evaluated is not 0
                color = "white" if v < mid else "black"  # readable on dark and bright viridis
                ax.text(i, t, f"{v:.1f}", ha="center", va="center", color=color, fontsize=size)
    return im


def score_matrix_figure(matrix: ScoreMatrix) -> Figure:
    T = matrix.num_tasks
    fig = new_figure(max(4.0, 1.5 + 0.9 * T), max(3.0, 1.0 + 0.6 * (T + 1)))
    ax = fig.add_subplot()
    vmin, vmax = _range([matrix.R])
    fig.colorbar(_heatmap(ax, matrix, vmin, vmax), ax=ax, label="score")
    return fig


def matrices_figure(matrices: Sequence[ScoreMatrix], labels: Sequence[str]) -> Figure:
    """Heatmaps of several runs side by side on one colour scale, so colours compare."""
    n = len(matrices)
    T = max(m.num_tasks for m in matrices)
    numbers = T <= NUMBERS_UP_TO
    cols = min(n, HEATMAP_COLUMNS if T <= 6 else 2)
    rows = math.ceil(n / cols)
    per_task = 0.6 if numbers else 0.32
    cell_w = max(3.5, 1.5 + per_task * T)
    cell_h = max(2.8, 1.0 + 0.75 * per_task * (T + 1))
    fig = new_figure(cell_w * cols + 1.0, cell_h * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    vmin, vmax = _range([m.R for m in matrices])
    same = all(m.tasks == matrices[0].tasks for m in matrices)
    im = None
    for k, (ax, matrix, name) in enumerate(zip(axes, matrices, labels, strict=False)):
        im = _heatmap(ax, matrix, vmin, vmax, title=name, numbers=numbers)
        if same and k % cols:  # one set of stage labels per figure row is enough
            ax.set_yticks(range(matrix.num_tasks + 1), labels=[])
            ax.set_ylabel("")
    for ax in axes[n:]:
        ax.set_visible(False)
    if im is not None:
        fig.colorbar(im, ax=list(axes[:n]), label="score", shrink=0.8)
    return fig


def task_curves_figure(matrix: ScoreMatrix) -> Figure:
    fig = new_figure(6.5, 4.0)
    ax = fig.add_subplot()
    stages = list(range(matrix.num_tasks + 1))
    for i, task in enumerate(matrix.tasks):
        ax.plot(stages, matrix.R[:, i], marker="o", label=plain(task))
        if math.isfinite(matrix.R[i + 1, i]):
            ax.plot([i + 1], [matrix.R[i + 1, i]], marker="*", markersize=12, color="black")
    ax.set_xticks(stages, labels=["base", *(f"{s}" for s in stages[1:])])
    ax.set_xlabel("stage (after task t; ★ = just trained)")
    ax.set_ylabel("score")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


Curve = tuple[str, Sequence[float], Sequence[dict[str, Any]]]
"""(label, ap_per_stage values, their intervals or [])."""


MAX_BANDS = 3
"""More curves than this get whiskers, side by side, instead of shaded bands: overlapping
bands of a whole bench (seven methods) hide each other."""


ONE_SEED_BAND = "95 % interval over test examples, given the seed"
"""The legend's words for a run's own interval (`stats.ONE_SEED`, shortened to fit)."""


def stage_curves_figure(curves: Sequence[Curve], band: str = ONE_SEED_BAND) -> Figure:
    """`ap_per_stage` of each run, with its interval where the run has intervals; `band` says
    what the interval covers (a run's test examples, or a bench's seeds)."""
    fig = new_figure(7.0, 4.0)
    ax = fig.add_subplot()
    longest = 1
    whiskers = len(curves) > MAX_BANDS
    for k, (name, values, cis) in enumerate(curves):
        xs = np.arange(1, len(values) + 1, dtype=float)
        if whiskers:
            xs += 0.5 * (k - (len(curves) - 1) / 2) / len(curves)
        longest = max(longest, len(values))
        color = f"C{k % 10}"
        ys = np.array([_num(v) for v in values])
        ax.plot(xs, ys, marker="o", markersize=4, color=color, label=plain(name))
        if len(cis) == len(values) and cis:
            low = np.array([_num(c.get("low")) for c in cis])
            high = np.array([_num(c.get("high")) for c in cis])
            if whiskers:
                err = np.vstack([ys - low, high - ys])
                ax.errorbar(xs, ys, yerr=err, fmt="none", ecolor=color, capsize=2, alpha=0.8)
            else:
                ax.fill_between(xs, low, high, color=color, alpha=0.18, linewidth=0)
    ax.set_xticks(range(1, longest + 1))
    ax.set_xlabel("stage t (after training task t)")
    ax.set_ylabel("ap_per_stage (mean over tasks 1..t)")
    ax.grid(alpha=0.3)
    if curves:
        drawn = any(len(cis) == len(values) and cis for _, values, cis in curves)
        title = (f"whiskers: {band}" if whiskers else f"shaded: {band}") if drawn else None
        ax.legend(fontsize=8, title=title, title_fontsize=7)
    return fig


Bar = tuple[float | None, float | None, float | None]
"""(value, low, high) of one metric of one run."""


def metrics_bar_figure(
    names: Sequence[str], runs: Sequence[str], values: Sequence[Sequence[Bar]]
) -> Figure:
    """Grouped bars per metric with whiskers (each run's 95 % interval over test examples,
    given its seed; none for the papers' plug-ins); `values[r][m]` is run r, metric m."""
    fig = new_figure(max(6.0, 1.5 + 1.1 * len(names) * max(1, len(runs)) / 2), 4.0)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(runs))
    x = np.arange(len(names))
    for r, (run, bars) in enumerate(zip(runs, values, strict=True)):
        heights = np.array([_num(b[0]) for b in bars])
        low = np.array([_num(b[1]) for b in bars])
        high = np.array([_num(b[2]) for b in bars])
        err = np.vstack([np.nan_to_num(heights - low), np.nan_to_num(high - heights)])
        pos = x + (r - (len(runs) - 1) / 2) * width
        ax.bar(
            pos,
            np.nan_to_num(heights),
            width,
            label=plain(run),
            color=f"C{r % 10}",
            yerr=np.clip(err, 0, None),
            capsize=3,
            error_kw={"linewidth": 1},
        )
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, labels=[plain(n) for n in names])
    ax.set_ylabel("score points")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def _task_boundaries(steps: list[dict[str, Any]]) -> list[tuple[float, str]]:
    """(first step, task) of each task in the step log, for vertical separators."""
    marks: list[tuple[float, str]] = []
    last: Any = object()
    for rec in steps:
        if rec.get("task") != last:
            last = rec.get("task")
            marks.append((float(rec.get("step", 0)), str(last)))
    return marks


def _mark_tasks(ax: Axes, steps: list[dict[str, Any]]) -> None:
    for k, (step, task) in enumerate(_task_boundaries(steps)):
        if k:
            ax.axvline(step, color="grey", linestyle=":", linewidth=1)
        ax.annotate(
            plain(task),
            (step, 1.0),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            va="top",
            color="grey",
        )


def named_losses(steps: list[dict[str, Any]]) -> list[str]:
    """Named losses worth their own panel: a single one is the total loss again, so none."""
    names = sorted({n for r in steps for n in (r.get("losses") or {})})
    return names if len(names) > 1 else []


def loss_figure(steps: list[dict[str, Any]]) -> Figure:
    names = named_losses(steps)
    fig = new_figure(8.0, 5.5 if names else 3.5)
    axes = fig.subplots(2 if names else 1, 1, sharex=True, squeeze=False)[:, 0]
    xs = [_num(r.get("step")) for r in steps]
    axes[0].plot(xs, [_num(r.get("loss")) for r in steps], linewidth=1, label="loss")
    axes[0].set_ylabel("total loss")
    for name in names:
        pts = [(x, (r.get("losses") or {}).get(name)) for x, r in zip(xs, steps, strict=True)]
        pts = [(x, float(v)) for x, v in pts if isinstance(v, int | float)]
        axes[1].plot([p[0] for p in pts], [p[1] for p in pts], linewidth=1, label=plain(name))
    if names:
        axes[1].set_ylabel("named losses")
        axes[1].legend(fontsize=8)
    axes[-1].set_xlabel("optimizer step")
    for ax in axes:
        ax.grid(alpha=0.3)
        _mark_tasks(ax, steps)
    return fig


def replay_figure(steps: list[dict[str, Any]], events: list[dict[str, Any]]) -> Figure:
    """Replayed samples per step with the replay events on the same axis (the loss has its own
    figure, so it is not drawn again here)."""
    fig = new_figure(8.0, 3.5)
    ax = fig.add_subplot()
    xs = [_num(r.get("step")) for r in steps]
    ax.plot(
        xs,
        [_num(r.get("replayed")) for r in steps],
        linewidth=1,
        color="C2",
        drawstyle="steps-mid",
        label="replayed samples",
    )
    # one collection for all events: logs can hold thousands of them
    ax.vlines(
        [_num(ev.get("step")) for ev in events],
        0,
        1,
        transform=ax.get_xaxis_transform(),
        color="C3",
        alpha=0.4,
        linewidth=1,
        label=f"replay event ({len(events)})",
    )
    ax.set_ylabel("replayed samples")
    ax.set_xlabel("optimizer step")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _mark_tasks(ax, steps)
    return fig


def _num(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return math.nan
