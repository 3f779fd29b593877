"""The command line: bench, report, eval, and clear errors with a non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from retain.cli import app
from tests.test_engine import TINY

runner = CliRunner()


def test_bad_override_exits_with_the_key_named(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "/dev/null", "train.lrr=1"])
    assert result.exit_code == 2
    assert "train.lrr: unknown key" in result.output


def test_bench_report_and_eval(tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(f"name: bench\noutput_dir: {tmp_path}\n")
    args = ["bench", str(config), "--methods", "fixed,sequential,multitask", *TINY,
            "train.steps_per_task=3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    group = tmp_path / "bench"
    assert (group / "comparison.html").exists()
    lines = result.output.splitlines()
    # references run first, then the method, each with its metrics in the table
    names = ("sequential ", "multitask ", "fixed ")
    table = [ln.split()[0] for ln in lines if ln.startswith(names)]
    assert table == ["sequential", "multitask", "fixed"]
    fixed = json.loads((group / "fixed" / "metrics.json").read_text())
    seq = json.loads((group / "sequential" / "metrics.json").read_text())
    mt = json.loads((group / "multitask" / "metrics.json").read_text())
    if mt["ap"] != seq["ap"]:
        expected = (fixed["ap"] - seq["ap"]) / (mt["ap"] - seq["ap"])
        assert abs(fixed["gap_closed"] - expected) < 1e-6

    report = runner.invoke(app, ["report", str(group / "fixed"), str(group / "sequential"),
                                 "--out", str(tmp_path)])
    assert report.exit_code == 0 and (tmp_path / "comparison.html").exists()
    scored = runner.invoke(app, ["eval", str(group / "fixed")])
    assert scored.exit_code == 0, scored.output
    final = fixed_final_row(group / "fixed")
    for name, value in final.items():
        assert f"{name:<24}{value:8.2f}" in scored.output


def fixed_final_row(run_dir: Path) -> dict[str, float]:
    header, *rows = (run_dir / "scores.csv").read_text().splitlines()
    names = header.split(",")[1:]
    return {n: float(v) for n, v in zip(names, rows[-1].split(",")[1:], strict=True)}


def test_report_refuses_a_folder_that_is_no_run(tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "not a run directory" in result.output
