"""`retain run | demo | bench | report | eval`."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer

from retain.config import ConfigError, RunConfig, apply_overrides, load_config, validate_config

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


def _fail(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _overrides(overrides: list[str] | None, data_dir: str | None) -> list[str]:
    """Command-line overrides, with `--data-dir` as one more of them."""
    extra = list(overrides or [])
    if data_dir is not None:
        extra.append(f"data.data_dir={data_dir}")
    return extra


def _config(path: Path | None, overrides: list[str] | None, data_dir: str | None) -> RunConfig:
    try:
        return load_config(path, _overrides(overrides, data_dir))
    except ConfigError as exc:
        _fail(str(exc))
        raise  # unreachable


def _summary_row(name: str, metrics: dict[str, Any]) -> str:
    def fmt(key: str) -> str:
        value = metrics.get(key)
        return f"{value:8.2f}" if isinstance(value, int | float) else f"{'—':>8}"

    cost = metrics.get("cost", {})
    seconds = cost.get("train_seconds", 0.0) + cost.get("eval_seconds", 0.0)
    return (
        f"{name:<22}{fmt('ap')}{fmt('bwt')}{fmt('forgetting_max')}{fmt('la')}"
        f"{fmt('gap_closed')}{seconds:9.0f}s"
    )


def _print_table(rows: list[tuple[str, dict[str, Any]]]) -> None:
    typer.echo(f"{'method':<22}{'ap':>8}{'bwt':>8}{'forget':>8}{'la':>8}{'gap':>8}{'time':>10}")
    for name, metrics in rows:
        typer.echo(_summary_row(name, metrics))


def _run(config: RunConfig) -> dict[str, Any]:
    from retain.train.loop import run

    try:
        result = run(config)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        _fail(f"error: {exc}")
        raise
    typer.echo(f"report: {result.run_dir / 'report.html'}")
    return result.metrics


@app.command("run")
def run_command(
    config: Annotated[Path, typer.Argument(help="YAML run configuration")],
    overrides: Overrides = None,
    data_dir: DataDir = None,
) -> None:
    """One run; resumes if its run directory already has a checkpoint."""
    cfg = _config(config, overrides, data_dir)
    metrics = _run(cfg)
    _print_table([(",".join(cfg.methods), metrics)])


def _bench(base: dict[str, Any], methods: list[str], group: str) -> list[tuple[str, dict]]:
    """Each method on the same stream and seed; references first so `gap_closed` can use them."""
    order = sorted(methods, key=lambda m: (m not in ("sequential", "multitask"), methods.index(m)))
    rows = []
    for method in order:
        data = json.loads(json.dumps(base))
        data["methods"] = method.split("+")
        data["name"] = f"{group}/{method}"
        try:
            cfg = validate_config(data, f"method {method}")
        except ConfigError as exc:
            _fail(str(exc))
            raise
        typer.echo(f"== {method}")
        rows.append((method, _run(cfg)))
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
) -> None:
    """Several methods on one stream, same seed, one table."""
    cfg = _config(config, overrides, data_dir)
    names = [m.strip() for m in methods.split(",") if m.strip()]
    rows = _bench(cfg.model_dump(mode="json"), names, cfg.name)
    _print_table(rows)
    typer.echo(f"comparison: {_compare(cfg.run_dir, [n for n, _ in rows])}")


@app.command("demo")
def demo_command(
    overrides: Overrides = None,
    data_dir: DataDir = None,
) -> None:
    """The built-in default: bundled SmolLM2-135M, built-in stream, sequential vs MSSR."""
    text = resources.files("retain").joinpath("configs/demo.yaml").read_text()
    import yaml

    data = yaml.safe_load(text)
    try:
        data = apply_overrides(data, _overrides(overrides, data_dir))
        cfg = validate_config(data, "demo")
    except ConfigError as exc:
        _fail(str(exc))
        raise
    rows = _bench(cfg.model_dump(mode="json"), ["sequential", "mssr"], cfg.name)
    _print_table(rows)
    typer.echo(f"comparison report: {_compare(cfg.run_dir, [n for n, _ in rows])}")


@app.command("report")
def report_command(
    runs: Annotated[list[Path], typer.Argument(help="run directories")],
    out: Annotated[Path | None, typer.Option(help="folder for a comparison")] = None,
) -> None:
    """Render a run's report, or compare several runs side by side."""
    from retain.results.report import compare_runs, write_report

    for run_dir in runs:
        if not (run_dir / "scores.csv").exists():
            _fail(f"{run_dir}: not a run directory (no scores.csv)")
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
) -> None:
    """Score a saved run's adapter on every task of its stream."""
    from retain.eval.saved import evaluate_saved_run

    overrides = _overrides(None, data_dir)
    try:
        scores = evaluate_saved_run(run_dir, task, overrides)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        _fail(f"error: {exc}")
        raise
    for name, score in scores.items():
        typer.echo(f"{name:<24}{score:8.2f}")


def main() -> None:  # pragma: no cover
    app()
