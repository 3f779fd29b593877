"""`retain run | demo | bench | report | eval`.

Every failure a user can fix (config, data, model, checkpoint, run directory, disk) ends as one
line `error: ...` naming the path and the fix, with exit code 2; `retain --debug ...` adds the
traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer

from retain.config import (
    RunConfig,
    apply_overrides,
    load_config,
    load_yaml,
    validate_config,
)

app = typer.Typer(
    help="Continual fine-tuning of LLMs: train a task stream, score every task after every task.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

DataDir = Annotated[
    str | None, typer.Option("--data-dir", help="folder with the benchmark data (data.data_dir)")
]
Overrides = Annotated[
    list[str] | None, typer.Argument(help="key=value overrides, e.g. train.lr=1e-4")
]
Overwrite = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        "--fresh",
        help="clear a run directory that holds files but no checkpoint of this run, or "
        "another run's checkpoint, and start afresh",
    ),
]

_options = {"debug": False}
REFERENCES = ("sequential", "multitask")
DEMO_METHODS = ["sequential", "mssr+gere+procl"]
"""What `retain demo` compares: plain fine-tuning against the recipe."""


@app.callback()
def _global(
    debug: Annotated[
        bool, typer.Option("--debug", help="show the traceback of a failure")
    ] = False,
) -> None:
    _options["debug"] = debug


def _fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _one_line(text: str) -> str:
    """A multi-line message (several config errors) as one line: `a: b; c`."""
    out = ""
    for part in (p.strip() for p in str(text).splitlines()):
        if part:
            out += ("" if not out else " " if out.endswith(":") else "; ") + part
    return out


def _os_message(exc: OSError) -> str:
    where = exc.filename or "?"
    if exc.errno == errno.ENOSPC:
        return (f"no space left on the device writing {where}; free disk space or set "
                "output_dir=... to a disk with room")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {where}: {exc.strerror}; choose an output_dir=... you can write"
    if exc.filename:
        return f"{where}: {exc.strerror or exc}; check the path"
    return _one_line(str(exc))


def user_message(exc: BaseException) -> str | None:
    """The one-line message of a failure the user can fix; None for a bug."""
    loading = sys.modules.get("retain.models.loading")  # not imported: cannot be its error
    if loading is not None and isinstance(exc, loading.ModelLoadError):
        return _one_line(str(exc))
    if isinstance(exc, ValueError):  # config, data, run directory, checkpoint, resume errors
        return _one_line(str(exc))
    if isinstance(exc, OSError):
        return _os_message(exc)
    return None


@contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except typer.Exit:
        raise
    except Exception as exc:
        message = user_message(exc)
        if message is None:
            raise
        if _options["debug"]:
            traceback.print_exc()
        _fail(f"error: {message}")


def _overrides(overrides: list[str] | None, data_dir: str | None) -> list[str]:
    """Command-line overrides, with `--data-dir` as one more of them."""
    extra = list(overrides or [])
    if data_dir is not None:
        extra.append(f"data.data_dir={data_dir}")
    return extra


def _print_table(
    rows: list[tuple[str, dict[str, Any]]], run_dirs: list[Path] | None = None
) -> None:
    from retain.results.summary import summary_lines

    for line in summary_lines(rows, run_dirs):
        typer.echo(line)
    for name, metrics in rows:
        note = metrics.get("gap_closed_note")
        if note and name not in REFERENCES:
            typer.echo(f"gap_closed of {name}: n/a ({note})")


def _run(config: RunConfig, overwrite: bool) -> dict[str, Any]:
    from retain.train.loop import run

    result = run(config, overwrite=overwrite)
    typer.echo(f"report: {result.run_dir / 'report.html'}")
    return result.metrics


@app.command("run")
def run_command(
    config: Annotated[Path, typer.Argument(help="YAML run configuration")],
    overrides: Overrides = None,
    data_dir: DataDir = None,
    overwrite: Overwrite = False,
) -> None:
    """One run; resumes if its run directory already has a checkpoint of this run.

    Every config key, its default and meaning: `retain config` (or docs/config.md).
    """
    with _user_errors():
        cfg = load_config(config, _overrides(overrides, data_dir))
        metrics = _run(cfg, overwrite)
        _print_table([(",".join(cfg.methods), metrics)])


def _bench(
    base: dict[str, Any],
    methods: list[str],
    seeds: int,
    overwrite: bool,
    references: bool,
    dry_run: bool = False,
) -> None:
    """Plan (every method validated first), run what must run, print and write the comparison;
    `dry_run`: print what each run would do and the CPU time left, run nothing."""
    from retain.bench.plan import plan_bench
    from retain.bench.report import bench_summaries, write_bench_report
    from retain.bench.runner import execute
    from retain.bench.table import summary_lines
    from retain.bench.two_scores import score_lines

    plan = plan_bench(base, methods, seeds, references)
    if dry_run:
        from retain.bench.status import status_lines

        for line in status_lines(plan):
            typer.echo(line)
        return
    execute(plan, overwrite, echo=typer.echo)
    summary, scored = bench_summaries(plan.root)
    for line in [*summary_lines(summary), *score_lines(scored)]:
        typer.echo(line)
    out = write_bench_report(summary, plan.root, f"retain bench: {plan.name}", scored)
    typer.echo(f"comparison: {out} (tables: {plan.root / 'bench.md'}, {plan.root / 'bench.csv'})")


Seeds = Annotated[int, typer.Option(help="seeds per method: seed, seed+1, ...")]


@app.command("bench")
def bench_command(
    target: Annotated[
        str, typer.Argument(help="a run config, a stream file, or a registered stream name")
    ],
    methods: Annotated[str, typer.Option(help="comma-separated; a+b combines methods in one run")],
    overrides: Overrides = None,
    seeds: Seeds = 1,
    model: Annotated[str | None, typer.Option(help="model.name_or_path for every run")] = None,
    references: Annotated[
        bool,
        typer.Option(help="also run sequential and multitask once per seed (gap_closed)"),
    ] = True,
    data_dir: DataDir = None,
    overwrite: Overwrite = False,
    dry_run: Annotated[
        bool,
        typer.Option(help="print each run's state (finished, resumes where, not started) and "
                     "the CPU time left; run nothing"),
    ] = False,
) -> None:
    """Every method and combination on one stream, over seeds, with cost, side by side.

    Resumable: finished runs are reused, an interrupted one resumes, and a changed setting
    re-runs only the runs it affects. Runs live in OUTPUT_DIR/NAME/seed<s>/<method>/.
    """
    from retain.bench.plan import base_config

    with _user_errors():
        extra = _overrides(overrides, data_dir)
        if model is not None:
            extra.append(f"model.name_or_path={model}")
        base = base_config(target, extra)
        names = [m.strip() for m in methods.split(",") if m.strip()]
        _bench(base, names, seeds, overwrite, references, dry_run)


@app.command("size")
def size_command(
    bench: Annotated[Path, typer.Argument(help="a pilot bench directory (≥ 2 seeds)")],
    delta: Annotated[float, typer.Option(help="the difference to resolve, in score points")],
    power: Annotated[float, typer.Option(help="the power to reach")] = 0.8,
    methods: Annotated[
        int | None,
        typer.Option(help="methods the planned bench compares with sequential (default: "
                     "the pilot's)", min=1),
    ] = None,
) -> None:
    """Seeds × test examples per task that resolve a difference DELTA on the primary score
    against sequential, from a pilot bench's variance components and run times."""
    from retain.bench.sizing import size_lines

    with _user_errors():
        if not 0.0 < power < 1.0 or delta <= 0:
            raise ValueError(f"--power must lie in (0, 1) and --delta be > 0, not {power}, {delta}")
        for line in size_lines(bench, delta, power, planned=methods):
            typer.echo(line)


@app.command("demo")
def demo_command(
    overrides: Overrides = None,
    data_dir: DataDir = None,
    overwrite: Overwrite = False,
) -> None:
    """The built-in default: bundled SmolLM2-135M, built-in stream, sequential against the
    recipe mssr+gere+procl, with the paired difference and its CI."""
    with _user_errors():
        text = resources.files("retain").joinpath("configs/demo.yaml").read_text()
        data = apply_overrides(load_yaml(text), _overrides(overrides, data_dir))
        cfg = validate_config(data, "demo")
        _bench(cfg.model_dump(mode="json"), DEMO_METHODS, 1, overwrite, references=False)


@app.command("streams")
def streams_command(data_dir: DataDir = None) -> None:
    """The registered streams and their tasks (format, scoring, metric, sizes)."""
    from retain.data.streams import describe_streams

    with _user_errors():
        typer.echo(describe_streams(data_dir))


@app.command("config")
def config_command() -> None:
    """Every configuration key with its default and meaning (also in docs/config.md)."""
    from retain.config_reference import config_reference

    typer.echo(config_reference())


@app.command("report")
def report_command(
    runs: Annotated[list[Path], typer.Argument(help="run directories or bench directories")],
    out: Annotated[Path | None, typer.Option(help="folder for a comparison")] = None,
    score: Annotated[
        str | None,
        typer.Option(help="re-render one run with this primary score: generate | loglik"),
    ] = None,
) -> None:
    """Render a run's or a bench's report, or compare several side by side (benches only when
    their streams and test examples match)."""
    from retain.bench.plan import MANIFEST
    from retain.bench.report import compare_benches, render_bench
    from retain.results.report import compare_runs, write_report

    with _user_errors():
        benches = [d for d in runs if (d / MANIFEST).exists()]
        if benches and len(benches) != len(runs):
            _fail("error: give either run directories or bench directories, not both")
        if benches:
            if len(benches) == 1:
                typer.echo(f"comparison: {render_bench(benches[0])}")
            else:
                target = out or benches[0].parent
                typer.echo(f"comparison: {compare_benches(benches, target)}")
            return
        for run_dir in runs:
            if not (run_dir / "scores.csv").exists():
                _fail(f"error: {run_dir}: not a run directory (no scores.csv)")
        if score is not None and score not in ("generate", "loglik"):
            _fail(f"error: --score must be generate or loglik, not {score!r}")
        if len(runs) == 1:
            typer.echo(f"report: {write_report(runs[0], score)}")
        else:
            target = out or runs[0].parent
            typer.echo(f"comparison: {compare_runs(runs, target)}")


@app.command("eval")
def eval_command(
    run_dir: Annotated[Path, typer.Argument(help="a finished run directory")],
    task: Annotated[
        int | None, typer.Option(help="adapter after this task (default: last)")
    ] = None,
    data_dir: DataDir = None,
    trust_remote_code: Annotated[
        bool,
        typer.Option(
            "--trust-remote-code",
            help="let the model run its own code; never taken from the run directory's config",
        ),
    ] = False,
) -> None:
    """Score a saved run's adapter on every task of its stream."""
    from retain.results.rescore import evaluate_saved_run

    with _user_errors():
        overrides = _overrides(None, data_dir)
        scores = evaluate_saved_run(run_dir, task, overrides, trust_remote_code)
        for name, score in scores.items():
            typer.echo(f"{name:<24}{score:8.2f}")


def main() -> None:  # pragma: no cover
    app()
