"""`retain run | demo | bench | report | eval`.

Every failure a user can fix (config, data, model, checkpoint, run directory, disk) ends as one
line `error: ...` naming the path and the fix, with exit code 2; `retain --debug ...` adds the
traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import json
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


def _bench_configs(base: dict[str, Any], methods: list[str], group: Path) -> list[RunConfig]:
    """One config per method under `group`, references first (so `gap_closed` can use them);
    all validated before any trains."""
    order = sorted(methods, key=lambda m: (m not in REFERENCES, methods.index(m)))
    configs = []
    for method in order:
        data = json.loads(json.dumps(base))
        data["methods"] = method.split("+")
        data["output_dir"] = str(group)
        data["name"] = method
        configs.append(validate_config(data, f"method {method}"))
    return configs


def _bench(configs: list[RunConfig], overwrite: bool) -> list[tuple[str, dict[str, Any]]]:
    from retain.train.resume import preflight

    for cfg in configs:  # every run directory checked before any method trains
        preflight(cfg, overwrite)
    rows = []
    for cfg in configs:
        typer.echo(f"== {cfg.name}")
        rows.append((cfg.name, _run(cfg, overwrite)))
    return rows


def _compare(group_dir: Path, names: list[str]) -> Path:
    from retain.results.report import compare_runs

    return compare_runs([group_dir / n for n in names], group_dir)


@app.command("bench")
def bench_command(
    config: Annotated[Path, typer.Argument(help="YAML run configuration (stream, model, budget)")],
    methods: Annotated[str, typer.Option(help="comma-separated; a+b combines methods in one run")],
    overrides: Overrides = None,
    data_dir: DataDir = None,
    overwrite: Overwrite = False,
) -> None:
    """Several methods on one stream, same seed, one table."""
    with _user_errors():
        cfg = load_config(config, _overrides(overrides, data_dir))
        names = [m.strip() for m in methods.split(",") if m.strip()]
        configs = _bench_configs(cfg.model_dump(mode="json"), names, cfg.run_dir)
        rows = _bench(configs, overwrite)
        _print_table(rows, [cfg.run_dir / n for n, _ in rows])
        typer.echo(f"comparison: {_compare(cfg.run_dir, [n for n, _ in rows])}")


@app.command("demo")
def demo_command(
    overrides: Overrides = None,
    data_dir: DataDir = None,
    overwrite: Overwrite = False,
) -> None:
    """The built-in default: bundled SmolLM2-135M, built-in stream, sequential vs MSSR."""
    with _user_errors():
        text = resources.files("retain").joinpath("configs/demo.yaml").read_text()
        data = apply_overrides(load_yaml(text), _overrides(overrides, data_dir))
        cfg = validate_config(data, "demo")
        configs = _bench_configs(cfg.model_dump(mode="json"), ["sequential", "mssr"],
                                 cfg.run_dir)
        rows = _bench(configs, overwrite)
        _print_table(rows, [cfg.run_dir / n for n, _ in rows])
        typer.echo(f"comparison report: {_compare(cfg.run_dir, [n for n, _ in rows])}")


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
    runs: Annotated[list[Path], typer.Argument(help="run directories")],
    out: Annotated[Path | None, typer.Option(help="folder for a comparison")] = None,
) -> None:
    """Render a run's report, or compare several runs side by side."""
    from retain.results.report import compare_runs, write_report

    with _user_errors():
        for run_dir in runs:
            if not (run_dir / "scores.csv").exists():
                _fail(f"error: {run_dir}: not a run directory (no scores.csv)")
        if len(runs) == 1:
            typer.echo(f"report: {write_report(runs[0])}")
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
    from retain.eval.saved import evaluate_saved_run

    with _user_errors():
        overrides = _overrides(None, data_dir)
        scores = evaluate_saved_run(run_dir, task, overrides, trust_remote_code)
        for name, score in scores.items():
            typer.echo(f"{name:<24}{score:8.2f}")


def main() -> None:  # pragma: no cover
    app()
