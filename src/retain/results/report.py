"""The HTML/PNG report of one run directory (`report.html` beside the run's files).

Everything is rendered from the files a run leaves behind (`scores.csv`, `metrics.json`,
`examples.npz`, `log.jsonl`, `config.yaml`, `environment.json`), so a report can be rebuilt at
any time, also for an interrupted or older run. It answers "how good is this run, and how sure
are we": each metric with its 95 % interval and direction, how each task was scored and on how
many examples, and a plain warning when that is too few for a few points to mean anything.
The comparison of runs lives in `retain.results.compare` (re-exported here for callers).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retain.eval.matrix import ScoreMatrix
from retain.eval.metrics import COST_NAMES
from retain.eval.stats import ONE_SEED
from retain.results import figures
from retain.results.compare import compare_runs
from retain.results.html import e, figure, fmt, page, plain_value, points, table, value_ci_html
from retain.results.view import HEADLINE, RunView, arrow, direction_text, label
from retain.storage.files import read_log, write_text_atomic

__all__ = ["compare_runs", "read_log", "write_report"]

_SCORING_FIRST = ("score_type", "decoding")
"""Scoring keys shown in their own columns; any other key the run wrote follows them."""


def write_report(run_dir: Path, score: str | None = None, figures: bool = True) -> Path:
    """Render `report.html` plus its PNG figures into `run_dir`; returns the HTML path.
    `score` (generate | loglik) re-renders the run with that primary score, no training;
    `figures=False` (`eval.figures`) leaves the PNGs out and says so."""
    run = RunView(Path(run_dir), score)
    figs = _figures(run) if figures else []
    parts = [f"<h1>retain run: {e(run.name)}</h1>", meta_line(run)]
    parts.append(status_notes(run))
    parts.append("<h2>Metrics</h2>")
    parts.append(_metrics_section(run))
    if run.tasks:
        parts.append("<h2>Tasks: scoring and test examples</h2>")
        parts.append(_tasks_table(run))
    if run.matrix is not None:
        parts.append("<h2>Score matrix</h2>")
        blank = run.unevaluated_cells()
        if blank:
            parts.append(
                f"<p>{blank} cell{'s' if blank > 1 else ''} above the superdiagonal "
                "not evaluated (eval.cells=needed), left blank.</p>"
            )
        parts.append(figure(*figs.pop(0)) if figs else _NO_FIGURES)
        parts.append(_matrix_table(run.matrix))
        from retain.results.two_scores_html import two_scores_section

        parts.append("<h2>Generation and option scores</h2>")
        parts.append(two_scores_section(run))
    if figs:
        parts.append("<h2>Figures</h2>")
        parts.extend(figure(src, caption) for src, caption in figs)
    parts.append("<h2>Cost</h2>")
    parts.append(_cost_table(run.cost))
    parts.append("<h2>Environment</h2>")
    parts.append(environment_table(run.environment))
    if run.config_text:
        parts.append("<h2>Configuration</h2>")
        parts.append(f"<pre>{e(run.config_text)}</pre>")
    out = run.dir / "report.html"
    write_text_atomic(out, page(f"retain report: {run.name}", parts))
    return out


_NO_FIGURES = ("<p>Figures not drawn (eval.figures=false); <code>retain report RUN_DIR</code> "
               "draws them.</p>")


def _figures(run: RunView) -> list[tuple[str, str]]:
    """Write the run's PNGs; (file, caption) each, the score matrix first when there is one."""
    out: list[tuple[str, str]] = []
    if run.matrix is not None:
        figures.save(figures.score_matrix_figure(run.matrix), run.dir / "score_matrix.png")
        out.append(("score_matrix.png", "Score matrix R[t, i] (rows: stages, cols: tasks)"))
        figures.save(figures.task_curves_figure(run.matrix), run.dir / "task_curves.png")
        out.append(("task_curves.png", "Score of each task over stages"))
    aps = run.metrics.get("ap_per_stage")
    if isinstance(aps, list) and aps:
        curve = figures.stage_curves_figure([(run.name, aps, run.ap_per_stage_ci)])
        figures.save(curve, run.dir / "ap_per_stage.png")
        band = (f" with its 95 % interval {ONE_SEED}"
                if len(run.ap_per_stage_ci) == len(aps) else "")
        out.append(("ap_per_stage.png", f"ap_per_stage: mean score over tasks 1..t{band}"))
    steps = [_task_named(r, run.tasks) for r in run.log if r.get("type") == "step"]
    events = [r for r in run.log if r.get("type") == "replay_event"]
    if steps:
        figures.save(figures.loss_figure(steps), run.dir / "loss_curves.png")
        out.append(("loss_curves.png", "Training loss per step"))
    if events:
        figures.save(figures.replay_figure(steps, events), run.dir / "replay_events.png")
        out.append(("replay_events.png", "Replay events and replayed samples per step"))
    return out


def meta_line(run: RunView) -> str:
    """Where the run lives and what produced it (git SHA, device, retain version)."""
    env = run.environment
    versions = env.get("versions") if isinstance(env.get("versions"), dict) else {}
    bits = [f"run directory {e(run.dir)}"]
    sha = env.get("git_sha")
    bits.append(f"git <code>{e(sha)}</code>" if sha else "git SHA unknown")
    if env.get("device"):
        bits.append(
            f"device {e(env['device'])}" + (f" ({e(env['gpu'])})" if env.get("gpu") else "")
        )
    if versions.get("retain"):
        bits.append(f"retain {e(versions['retain'])}")
    return f'<p class="meta">{" · ".join(bits)}</p>'


def status_notes(run: RunView) -> str:
    """Warnings, incompleteness, unreadable files and the small-test-set note, said plainly."""
    notes = [f'<p class="note">Warning: {e(w)}</p>' for w in run.warnings]
    if run.metrics.get("complete") is False:
        stage, total = run.metrics.get("last_stage"), run.metrics.get("num_tasks")
        notes.append(
            f'<p class="note">Incomplete run: metrics are computed over stages 0..{e(stage)} '
            f"of {e(total)} (prefix stream).</p>"
        )
    notes.extend(f'<p class="note">{e(p)}</p>' for p in run.problems)
    if run.noise:
        notes.append(f'<p class="noise"><strong>Small test sets.</strong> {e(run.noise)}</p>')
    return "".join(notes)


def _metrics_section(run: RunView) -> str:
    if not run.metrics:
        return "<p>No metrics yet (metrics.json and scores.csv missing).</p>"
    defs, notes = run.definitions(), run.metric_notes()
    rows = []
    for name in HEADLINE:
        if name not in run.metrics and name not in run.ci and name != "gap_closed":
            continue
        low, high = run.bounds(name)
        definition = defs.get(name, "")
        if name in notes:
            definition += f" Here: {notes[name]}."
        rows.append(
            [
                f"<code>{e(label(name))}</code>",
                (f'<span class="dir" title="{e(direction_text(name))}">{arrow(name)}</span>', "c"),
                value_ci_html(run.value(name), low, high),
                (e(definition), "def"),
            ]
        )
    aps = run.metrics.get("ap_per_stage")
    if isinstance(aps, list) and aps:
        shown = ", ".join(points(v) for v in aps)
        rows.append(
            [
                "<code>ap_per_stage</code>",
                (arrow("ap"), "c"),
                e(shown),
                (e(defs.get("ap_per_stage", "")), "def"),
            ]
        )
    head = ["metric", "better", "value [95 % CI]", ("definition", "l")]
    source = run.ci_source
    caption = (
        f"<p>95 % intervals {ONE_SEED}, from a bootstrap over test examples (stratified by task "
        f"and half; {e(source)}), small-n corrected. The papers' forgetting_max, "
        "forgetting_first and normalized_avg are biased upward at small n (a max over noisy "
        "scores) and have no interval; the *_xfit rows are their cross-fitted values. "
        "↑ higher is better, ↓ lower is better; normalized_avg is shown ×100.</p>"
        if source
        else "<p>No intervals: this run has no per-example results (examples.npz). "
        "↑ higher is better, ↓ lower is better; normalized_avg is shown ×100.</p>"
    )
    extra = ""
    if "incomplete" in defs and run.metrics.get("complete") is False:
        extra = f'<p class="def">{e(defs["incomplete"])}</p>'
    return caption + table(head, rows) + extra


def _tasks_table(run: RunView) -> str:
    """Per task (and general benchmark): how it is scored, on how many examples, truncation."""
    names = [*run.tasks, *run.general]
    facts = {n: run.task_facts(n) for n in names}
    others = list(dict.fromkeys(k for f in facts.values() for k in f if k not in _SCORING_FIRST))
    trunc_keys = list(dict.fromkeys(k for n in names for k in run.truncation(n)))
    rows = []
    for n in names:
        f = facts[n]
        kind = "task" if n in run.tasks else "general"
        count = run.n_per_task.get(n)
        small = count is not None and kind == "task" and count < 50
        rows.append(
            [
                e(n),
                e(kind),
                e(f.get("score_type") or "n/a"),
                e(plain_value(f["decoding"]) if f.get("decoding") is not None else "n/a"),
                *(e(plain_value(f[k]) if k in f else "") for k in others),
                (e(fmt(count)), "worse") if small else e(fmt(count)),
                *(e(fmt(run.truncation(n).get(k))) for k in trunc_keys),
            ]
        )
    head = ["name", "kind", "score type", "decoding", *map(e, others), "test examples"]
    head += [f"truncated {e(k.replace('_', ' '))}" for k in trunc_keys]
    note = ""
    if trunc_keys:
        note = (
            "<p>Truncated prompts: examples whose prompt was cut to fit the model's context "
            "(a truncated test prompt may lose the question).</p>"
        )
    return table(head, rows, left=4) + note


def _matrix_table(matrix: ScoreMatrix) -> str:
    head = ["stage", *(e(t) for t in matrix.tasks), *(f"general:{e(m)}" for m in matrix.general)]
    rows = []
    for stage in range(matrix.num_tasks + 1):
        name = "base" if stage == 0 else f"after {matrix.tasks[stage - 1]}"
        values = [*matrix.R[stage], *matrix.G[stage]]
        cells = ["" if v != v else e(fmt(float(v))) for v in values]  # NaN: not evaluated
        rows.append([f"{stage} ({e(name)})", *cells])
    return table(head, rows)


def _cost_table(cost: dict[str, Any]) -> str:
    names = [n for n in COST_NAMES if n in cost] + [
        n for n in cost if n not in COST_NAMES and n != "counters"
    ]
    rows = [[e(n), e(fmt(cost.get(n)))] for n in names]
    rows += [[f"counters.{e(k)}", e(fmt(v))] for k, v in (cost.get("counters") or {}).items()]
    if not rows:
        return "<p>No cost records (log.jsonl missing or empty).</p>"
    return table(["cost", "value"], rows)


def environment_table(env: dict[str, Any]) -> str:
    """environment.json flattened (versions.torch, ...), git SHA first."""
    if not env:
        return "<p>No environment.json (versions, git SHA and device unknown).</p>"
    flat: dict[str, Any] = {"git_sha": env.get("git_sha")}
    for key, value in env.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat.setdefault(key, value)
    return table(["key", "value"], [[e(k), e(fmt(v))] for k, v in flat.items()], left=2)


def _task_named(record: dict[str, Any], tasks: list[str]) -> dict[str, Any]:
    """The loop logs the task index; figures label tasks by name where it is known."""
    task = record.get("task")
    if isinstance(task, int) and not isinstance(task, bool) and 0 <= task < len(tasks):
        return {**record, "task": tasks[task]}
    return record
