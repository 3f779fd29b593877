"""HTML/PNG report of a run directory, and a side-by-side comparison of several runs.

Everything is rendered from the files a run leaves behind (`scores.csv`, `metrics.json`,
`log.jsonl`, `config.yaml`), so a report can be rebuilt at any time, also for an interrupted
run. Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, so the
user's global backend is never touched); the HTML escapes every value and refers to the PNGs
beside it by relative path.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from retain.eval.matrix import ScoreMatrix
from retain.eval.metrics import COST_NAMES, DEFINITIONS, METRIC_NAMES, compute_metrics, cost_summary
from retain.results.files import read_log, write_text_atomic

if TYPE_CHECKING:
    from matplotlib.figure import Figure

COMPARE_METRICS: tuple[str, ...] = ("ap", "bwt", "forgetting_max")
"""Metrics of the comparison bar chart."""

_CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; }
td.l, th.l { text-align: left; }
td.def { text-align: left; color: #555; font-size: 0.9em; max-width: 40em; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; }
.note { color: #a50; }
"""


# ---- reading a run directory ----


class _Run:
    """What the report needs from one run directory; missing files give empty sections."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir)
        scores = self.dir / "scores.csv"
        self.matrix: ScoreMatrix | None = ScoreMatrix.from_csv(scores) if scores.exists() else None
        metrics_path = self.dir / "metrics.json"
        if metrics_path.exists():
            self.metrics: dict[str, Any] = json.loads(metrics_path.read_text(encoding="utf-8"))
        elif self.matrix is not None:
            self.metrics = compute_metrics(self.matrix)
        else:
            self.metrics = {}
        self.log = read_log(self.dir / "log.jsonl")
        cost = self.metrics.get("cost")
        if isinstance(cost, dict):
            self.cost: dict[str, Any] = cost
        else:
            self.cost = cost_summary(self.log) if self.log else {}
        config_path = self.dir / "config.yaml"
        self.config_text = config_path.read_text(encoding="utf-8") if config_path.exists() else ""
        try:
            config = yaml.safe_load(self.config_text) if self.config_text else {}
        except yaml.YAMLError:
            config = {}
        self.config: dict[str, Any] = config if isinstance(config, dict) else {}
        self.name = str(self.config.get("name") or self.dir.name)

    def definitions(self) -> dict[str, str]:
        defs = self.metrics.get("definitions")
        return {**DEFINITIONS, **defs} if isinstance(defs, dict) else dict(DEFINITIONS)


# ---- single-run report ----


def write_report(run_dir: Path) -> Path:
    """Render `report.html` plus its PNG figures into `run_dir`; returns the HTML path."""
    run = _Run(Path(run_dir))
    figures: list[tuple[str, str]] = []
    if run.matrix is not None:
        _save(_score_matrix_figure(run.matrix), run.dir / "score_matrix.png")
        figures.append(("score_matrix.png", "Score matrix R[t, i] (rows: stages, cols: tasks)"))
        _save(_task_curves_figure(run.matrix), run.dir / "task_curves.png")
        figures.append(("task_curves.png", "Score of each task over stages"))
    tasks = run.matrix.tasks if run.matrix is not None else []
    steps = [_task_named(r, tasks) for r in run.log if r.get("type") == "step"]
    events = [r for r in run.log if r.get("type") == "replay_event"]
    if steps:
        _save(_loss_figure(steps), run.dir / "loss_curves.png")
        figures.append(("loss_curves.png", "Training loss per step"))
    if events:
        _save(_replay_figure(steps, events), run.dir / "replay_events.png")
        figures.append(("replay_events.png", "Replay events and replayed samples per step"))

    parts = [f"<h1>retain run: {_e(run.name)}</h1>", f"<p>Run directory: {_e(str(run.dir))}</p>"]
    parts.append(_status_note(run.metrics))
    parts.append("<h2>Metrics</h2>")
    parts.append(_metrics_table(run.metrics, run.definitions()))
    parts.append("<h2>Cost</h2>")
    parts.append(_cost_table(run.cost))
    if run.matrix is not None:
        parts.append("<h2>Score matrix</h2>")
        parts.append(_matrix_table(run.matrix))
    if figures:
        parts.append("<h2>Figures</h2>")
        for src, caption in figures:
            parts.append(
                f'<figure><img src="{_e(src)}" alt="{_e(caption)}">'
                f"<figcaption>{_e(caption)}</figcaption></figure>"
            )
    if run.config_text:
        parts.append("<h2>Configuration</h2>")
        parts.append(f"<pre>{_e(run.config_text)}</pre>")
    out = run.dir / "report.html"
    write_text_atomic(out, _page(f"retain report: {run.name}", parts))
    return out


def _status_note(metrics: dict[str, Any]) -> str:
    notes = [f'<p class="note">Warning: {_e(w)}</p>' for w in metrics.get("warnings", [])]
    if metrics.get("complete") is False:
        stage, total = metrics.get("last_stage"), metrics.get("num_tasks")
        notes.append(
            f'<p class="note">Incomplete run: metrics are computed over stages 0..{_e(stage)} '
            f"of {_e(total)} (prefix stream).</p>"
        )
    return "".join(notes)


def _metrics_table(metrics: dict[str, Any], definitions: dict[str, str]) -> str:
    if not metrics:
        return "<p>No metrics yet (metrics.json and scores.csv missing).</p>"
    rows = []
    for name in METRIC_NAMES:
        if name not in metrics and name != "gap_closed":
            continue
        rows.append(
            f'<tr><td class="l"><code>{_e(name)}</code></td><td>{_e(_fmt(metrics.get(name)))}</td>'
            f'<td class="def">{_e(definitions.get(name, ""))}</td></tr>'
        )
    if "incomplete" in definitions:
        rows.append(
            f'<tr><td class="l" colspan="2">incomplete runs</td>'
            f'<td class="def">{_e(definitions["incomplete"])}</td></tr>'
        )
    head = '<tr><th class="l">metric</th><th>value</th><th class="l">definition</th></tr>'
    return f"<table>{head}{''.join(rows)}</table>"


def _cost_table(cost: dict[str, Any]) -> str:
    names = [n for n in COST_NAMES if n in cost] + [
        n for n in cost if n not in COST_NAMES and n != "counters"
    ]
    rows = [f'<tr><td class="l">{_e(n)}</td><td>{_e(_fmt(cost.get(n)))}</td></tr>' for n in names]
    for key, value in (cost.get("counters") or {}).items():
        rows.append(f'<tr><td class="l">counters.{_e(key)}</td><td>{_e(_fmt(value))}</td></tr>')
    if not rows:
        return "<p>No cost records (log.jsonl missing or empty).</p>"
    return f'<table><tr><th class="l">cost</th><th>value</th></tr>{"".join(rows)}</table>'


def _matrix_table(matrix: ScoreMatrix) -> str:
    head = "".join(f"<th>{_e(t)}</th>" for t in matrix.tasks)
    head += "".join(f"<th>general:{_e(m)}</th>" for m in matrix.general)
    rows = []
    for stage in range(matrix.num_tasks + 1):
        label = "base" if stage == 0 else f"after {matrix.tasks[stage - 1]}"
        cells = "".join(f"<td>{_e(_fmt(v))}</td>" for v in [*matrix.R[stage], *matrix.G[stage]])
        rows.append(f'<tr><td class="l">{stage} ({_e(label)})</td>{cells}</tr>')
    return f'<table><tr><th class="l">stage</th>{head}</tr>{"".join(rows)}</table>'


# ---- comparison of runs ----


def compare_runs(run_dirs: list[Path], out_dir: Path) -> Path:
    """Write `comparison.html` (+ `comparison.png`) with all metrics and costs side by side."""
    if not run_dirs:
        raise ValueError("compare_runs needs at least one run directory")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = [_Run(Path(d)) for d in run_dirs]
    labels = _unique_labels(runs)
    _save(_comparison_figure(runs, labels), out_dir / "comparison.png")

    head = "".join(f"<th>{_e(label)}</th>" for label in labels)
    metric_rows = []
    for name in METRIC_NAMES:
        if name == "ap_per_stage":
            continue
        cells = "".join(f"<td>{_e(_fmt(r.metrics.get(name)))}</td>" for r in runs)
        metric_rows.append(f'<tr><td class="l"><code>{_e(name)}</code></td>{cells}</tr>')
    stage_cells = "".join(
        f"<td>{_e(_fmt(r.metrics.get('last_stage')))} / {_e(_fmt(r.metrics.get('num_tasks')))}</td>"
        for r in runs
    )
    metric_rows.append(f'<tr><td class="l">stages done</td>{stage_cells}</tr>')
    cost_names = [n for n in COST_NAMES if n != "seconds_per_task"]
    cost_rows = []
    for name in cost_names:
        cells = "".join(f"<td>{_e(_fmt(r.cost.get(name)))}</td>" for r in runs)
        cost_rows.append(f'<tr><td class="l">{_e(name)}</td>{cells}</tr>')
    links = []
    for label, run in zip(labels, runs, strict=True):
        report = run.dir / "report.html"
        if report.exists():
            rel = Path(os.path.relpath(report, out_dir)).as_posix()
            links.append(f'<li><a href="{_e(rel)}">{_e(label)}</a></li>')
        else:
            links.append(f"<li>{_e(label)}: {_e(str(run.dir))}</li>")
    defs = runs[0].definitions()
    def_rows = "".join(
        f'<tr><td class="l"><code>{_e(n)}</code></td>'
        f'<td class="def">{_e(defs.get(n, ""))}</td></tr>'
        for n in METRIC_NAMES
    )
    parts = [
        "<h1>retain: comparison of runs</h1>",
        f"<ul>{''.join(links)}</ul>",
        '<img src="comparison.png" alt="ap, bwt and forgetting_max per run">',
        "<h2>Metrics</h2>",
        f'<table><tr><th class="l">metric</th>{head}</tr>{"".join(metric_rows)}</table>',
        "<h2>Cost</h2>",
        f'<table><tr><th class="l">cost</th>{head}</tr>{"".join(cost_rows)}</table>',
        "<h2>Definitions</h2>",
        f"<table>{def_rows}</table>",
    ]
    out = out_dir / "comparison.html"
    write_text_atomic(out, _page("retain: comparison of runs", parts))
    return out


def _unique_labels(runs: Sequence[_Run]) -> list[str]:
    """Run names, disambiguated by directory when two runs share a name."""
    names = [r.name for r in runs]
    labels = []
    for run, name in zip(runs, names, strict=True):
        labels.append(name if names.count(name) == 1 else f"{name} ({run.dir})")
    return labels


# ---- figures ----


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig: Figure, path: Path) -> None:
    """Write via a temp name so a reader never sees half a PNG."""
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)


def _score_matrix_figure(matrix: ScoreMatrix) -> Figure:
    T = matrix.num_tasks
    fig = _new_figure(max(4.0, 1.0 + 0.9 * T), max(3.0, 1.0 + 0.6 * (T + 1)))
    ax = fig.add_subplot()
    im = ax.imshow(
        matrix.R, cmap="viridis", aspect="auto", vmin=_nanmin(matrix.R), vmax=_nanmax(matrix.R)
    )
    fig.colorbar(im, ax=ax, label="score")
    ax.set_xticks(range(T), labels=[_plain(t) for t in matrix.tasks], rotation=30, ha="right")
    ax.set_yticks(range(T + 1), labels=["base", *(f"after {_plain(t)}" for t in matrix.tasks)])
    ax.set_xlabel("evaluated task")
    ax.set_ylabel("stage")
    lo, hi = _nanmin(matrix.R), _nanmax(matrix.R)
    mid = (lo + hi) / 2 if lo is not None and hi is not None else 0.0
    # dark viridis cells (low scores) get white text, bright ones black
    for t in range(T + 1):
        for i in range(T):
            v = matrix.R[t, i]
            text = "–" if not math.isfinite(v) else f"{v:.1f}"
            color = "white" if math.isfinite(v) and v < mid else "black"
            ax.text(i, t, text, ha="center", va="center", color=color, fontsize=9)
    return fig


def _task_curves_figure(matrix: ScoreMatrix) -> Figure:
    fig = _new_figure(6.5, 4.0)
    ax = fig.add_subplot()
    stages = list(range(matrix.num_tasks + 1))
    for i, task in enumerate(matrix.tasks):
        ax.plot(stages, matrix.R[:, i], marker="o", label=_plain(task))
        if math.isfinite(matrix.R[i + 1, i]):
            ax.plot([i + 1], [matrix.R[i + 1, i]], marker="*", markersize=12, color="black")
    ax.set_xticks(stages, labels=["base", *(f"{s}" for s in stages[1:])])
    ax.set_xlabel("stage (after task t; ★ = just trained)")
    ax.set_ylabel("score")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def _task_named(record: dict[str, Any], tasks: list[str]) -> dict[str, Any]:
    """The loop logs the task index; figures label tasks by name where it is known."""
    task = record.get("task")
    if isinstance(task, int) and not isinstance(task, bool) and 0 <= task < len(tasks):
        return {**record, "task": tasks[task]}
    return record


def _task_boundaries(steps: list[dict[str, Any]]) -> list[tuple[float, str]]:
    """(first step, task) of each task in the step log, for vertical separators."""
    marks: list[tuple[float, str]] = []
    last: Any = object()
    for rec in steps:
        if rec.get("task") != last:
            last = rec.get("task")
            marks.append((float(rec.get("step", 0)), str(last)))
    return marks


def _mark_tasks(ax: Any, steps: list[dict[str, Any]]) -> None:
    for k, (step, task) in enumerate(_task_boundaries(steps)):
        if k:
            ax.axvline(step, color="grey", linestyle=":", linewidth=1)
        ax.annotate(
            _plain(task),
            (step, 1.0),
            xycoords=("data", "axes fraction"),
            fontsize=7,
            va="top",
            color="grey",
        )


def _loss_figure(steps: list[dict[str, Any]]) -> Figure:
    names = sorted({n for r in steps for n in (r.get("losses") or {})})
    fig = _new_figure(8.0, 5.5 if names else 3.5)
    axes = fig.subplots(2 if names else 1, 1, sharex=True, squeeze=False)[:, 0]
    xs = [_num(r.get("step")) for r in steps]
    axes[0].plot(xs, [_num(r.get("loss")) for r in steps], linewidth=1, label="loss")
    axes[0].set_ylabel("loss")
    _mark_tasks(axes[0], steps)
    if names:
        for name in names:
            pts = [(x, (r.get("losses") or {}).get(name)) for x, r in zip(xs, steps, strict=True)]
            pts = [(x, float(v)) for x, v in pts if isinstance(v, int | float)]
            axes[1].plot([p[0] for p in pts], [p[1] for p in pts], linewidth=1, label=_plain(name))
        axes[1].set_ylabel("named losses")
        axes[1].legend(fontsize=8)
        _mark_tasks(axes[1], steps)
    axes[-1].set_xlabel("optimizer step")
    for ax in axes:
        ax.grid(alpha=0.3)
    return fig


def _replay_figure(steps: list[dict[str, Any]], events: list[dict[str, Any]]) -> Figure:
    fig = _new_figure(8.0, 5.5)
    top, bottom = fig.subplots(2, 1, sharex=True)
    xs = [_num(r.get("step")) for r in steps]
    top.plot(xs, [_num(r.get("loss")) for r in steps], linewidth=1, color="C0", label="loss")
    # one collection for all events: logs can hold thousands of them
    top.vlines(
        [_num(ev.get("step")) for ev in events],
        0,
        1,
        transform=top.get_xaxis_transform(),
        color="C3",
        alpha=0.5,
        linewidth=1,
        label=f"replay event ({len(events)})",
    )
    top.set_ylabel("loss")
    top.legend(fontsize=8)
    bottom.plot(
        xs, [_num(r.get("replayed")) for r in steps], linewidth=1, color="C2", drawstyle="steps-mid"
    )
    bottom.set_ylabel("replayed samples")
    bottom.set_xlabel("optimizer step")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        _mark_tasks(ax, steps)
    return fig


def _comparison_figure(runs: Sequence[_Run], labels: list[str]) -> Figure:
    fig = _new_figure(max(6.0, 1.5 + 1.2 * len(runs)), 4.0)
    ax = fig.add_subplot()
    width = 0.8 / len(COMPARE_METRICS)
    x = np.arange(len(runs))
    for k, name in enumerate(COMPARE_METRICS):
        values = [r.metrics.get(name) for r in runs]
        heights = [float(v) if isinstance(v, int | float) else 0.0 for v in values]
        bars = ax.bar(x + (k - (len(COMPARE_METRICS) - 1) / 2) * width, heights, width, label=name)
        ax.bar_label(bars, labels=[_fmt(v) for v in values], fontsize=7)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, labels=[_plain(label) for label in labels], rotation=20, ha="right")
    ax.set_ylabel("score points")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


# ---- helpers ----


def _page(title: str, parts: Iterable[str]) -> str:
    body = "\n".join(p for p in parts if p)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    """Compact display: n/a for undefined, 4 significant digits for floats."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if hasattr(value, "item") and not isinstance(value, list | tuple | dict):
        return _fmt(value.item())
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def _plain(text: Any) -> str:
    """Figure text shown literally: a task named 'a$b$' must not turn into mathtext."""
    return str(text).replace("$", r"\$")


def _num(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return math.nan


def _nanmin(a: Any) -> float | None:
    return float(np.nanmin(a)) if np.isfinite(a).any() else None


def _nanmax(a: Any) -> float | None:
    return float(np.nanmax(a)) if np.isfinite(a).any() else None
