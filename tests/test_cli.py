"""The command line: bench, report, eval, and clear errors with a non-zero exit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retain.cli import app
from tests.test_engine import TINY

runner = CliRunner()


def test_bad_override_exits_with_the_key_named(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "/dev/null", "train.lrr=1"])
    assert result.exit_code == 2
    assert "train.lrr: unknown key" in result.output


# Budget chosen so that joint training really ends elsewhere than sequential training on the
# tiny model (checked below): the gap_closed check must run, not be skipped.
DIFFER = ["train.steps_per_task=20", "model.finetune=full", "train.lr=3e-3",
          "data.num_tasks=3", "data.max_test_per_task=24"]


@pytest.mark.slow  # a bench of three methods, then report and eval
def test_bench_report_and_eval(tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(f"name: bench\noutput_dir: {tmp_path}\n")
    args = ["bench", str(config), "--methods", "fixed,sequential,multitask", *TINY, *DIFFER]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "bench" / "bench.html").exists()
    group = tmp_path / "bench" / "seed42"
    lines = result.output.splitlines()
    # references run first, then the method, each with its metrics in the table
    names = ("sequential ", "multitask ", "fixed ")
    table = [ln.split()[0] for ln in lines if ln.startswith(names)]
    assert table == ["sequential", "multitask", "fixed"]
    fixed = json.loads((group / "fixed" / "metrics.json").read_text())
    seq = json.loads((group / "sequential" / "metrics.json").read_text())
    mt = json.loads((group / "multitask" / "metrics.json").read_text())
    assert mt["ap"] != seq["ap"], "the references must differ, or gap_closed is never checked"
    expected = (fixed["ap"] - seq["ap"]) / (mt["ap"] - seq["ap"])
    assert fixed["gap_closed"] == pytest.approx(expected, abs=1e-6)
    assert fixed["gap_closed_note"] is None
    assert fixed["gap_closed_references"] == {"sequential": str(group / "sequential"),
                                              "multitask": str(group / "multitask")}
    assert "this run is the sequential reference" in seq["gap_closed_note"]

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


def _error_line(output: str) -> str:
    """The failure is one line, `error: ...`, and no traceback unless --debug is given."""
    assert "Traceback" not in output, output
    errors = [ln for ln in output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, output
    return errors[0]


def _tiny_run(tmp_path: Path, *extra: str) -> list[str]:
    return ["run", "/dev/null", *TINY, f"output_dir={tmp_path}", "data.num_tasks=1",
            "train.steps_per_task=2", *extra]


def test_bench_validates_every_method_before_training_any(tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(f"name: b\noutput_dir: {tmp_path}\n")
    result = runner.invoke(app, ["bench", str(config), "--methods", "sequential,fixed,magic",
                                 *TINY])
    assert result.exit_code == 2
    assert "method magic" in _error_line(result.output)
    assert not (tmp_path / "b").exists()


def test_run_never_overwrites_foreign_files_without_overwrite(tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("name: r\nmethods: [sequential]\nmodel: {}\ntrain: {}\n")
    (run_dir / "metrics.json").write_text("{}")  # a run's results, no checkpoint
    result = runner.invoke(app, _tiny_run(tmp_path, "name=r"))
    assert result.exit_code == 2
    line = _error_line(result.output)
    assert str(run_dir) in line and "--overwrite" in line
    for flag in ("--overwrite", "--fresh"):
        result = runner.invoke(app, [*_tiny_run(tmp_path, "name=r"), flag])
        assert result.exit_code == 0, result.output
        assert f"--overwrite: cleared {run_dir}" in result.output
        (run_dir / "checkpoints").rename(tmp_path / f"ck{flag}")  # results but no checkpoint


def test_bench_and_demo_take_overwrite_too(tmp_path: Path) -> None:
    from importlib import resources

    from retain.bench.plan import plan_bench
    from retain.cli import DEMO_METHODS
    from retain.config import apply_overrides, dump_config, load_yaml, validate_config

    args = ["demo", *TINY, f"output_dir={tmp_path}", "data.num_tasks=1",
            "train.steps_per_task=2"]
    demo = load_yaml(resources.files("retain").joinpath("configs/demo.yaml").read_text())
    base = validate_config(apply_overrides(demo, args[1:])).model_dump(mode="json")
    planned = [r for r in plan_bench(base, DEMO_METHODS, 1, False).runs
               if r.method == DEMO_METHODS[-1]][0]
    recipe = planned.run_dir  # the recipe's results, without their checkpoint
    recipe.mkdir(parents=True)
    (recipe / "config.yaml").write_text(dump_config(planned.config))
    (recipe / "metrics.json").write_text("{}")
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "--overwrite" in _error_line(result.output)
    assert not (tmp_path / "demo" / "seed42" / "sequential").exists(), "checked before training"
    result = runner.invoke(app, [*args, "--fresh"])
    assert result.exit_code == 0, result.output
    assert f"--overwrite: cleared {recipe}" in result.output
    config = tmp_path / "b.yaml"
    config.write_text(f"name: demo\noutput_dir: {tmp_path}\n")
    bench = ["bench", str(config), "--methods", "sequential", *TINY, "data.num_tasks=1",
             "train.steps_per_task=2", "--overwrite"]
    result = runner.invoke(app, bench)
    assert result.exit_code == 0 and "--overwrite: cleared" in result.output


def _disk_full(monkeypatch) -> None:
    from safetensors import SafetensorError

    from retain.train import checkpoint

    def full(tensors, filename, metadata=None):
        raise SafetensorError("Error while serializing: I/O error: No space (os error 28)")

    monkeypatch.setattr(checkpoint, "save_file", full)


@pytest.mark.parametrize("case", ["gguf", "model_dir", "output_file", "disk_full", "data",
                                  "checkpoint", "config"])
def test_user_facing_failures_are_one_line_with_path_and_fix(tmp_path: Path, monkeypatch,
                                                              case: str) -> None:
    args = _tiny_run(tmp_path, "name=x")
    path = tmp_path / "x"
    fix = ""
    if case == "gguf":
        path = tmp_path / "missing.gguf"
        args.append(f"model.name_or_path={path}")
        fix = "bundled"
    elif case == "model_dir":
        path = tmp_path / "empty_model"
        path.mkdir()
        args.append(f"model.name_or_path={path}")
        fix = "config.json"
    elif case == "output_file":
        path = tmp_path / "file"
        path.write_text("")
        args.append(f"output_dir={path}")
        fix = "output_dir="
    elif case == "disk_full":
        _disk_full(monkeypatch)
        fix = "free disk space"
        path = tmp_path / "x" / "checkpoints"
    elif case == "data":
        path = tmp_path / "no_data"
        args += ["data.stream=olora-standard-1", f"data.data_dir={path}"]
    elif case == "checkpoint":
        assert runner.invoke(app, args).exit_code == 0
        for name in ("latest", "previous"):
            f = tmp_path / "x" / "checkpoints" / name / "tensors.safetensors"
            f.write_bytes(b"broken")
        path = tmp_path / "x" / "checkpoints" / "latest"
        fix = "--overwrite"
    else:
        config = tmp_path / "bad.yaml"
        config.write_text("train:\n  batch_size: true\n  lrr: 1\n")
        args[1] = str(config)
        path, fix = config, "allowed here"
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    line = _error_line(result.output)
    assert str(path) in line and fix in line
    debug = runner.invoke(app, ["--debug", *args])
    assert debug.exit_code == 2 and "Traceback" in debug.output


def test_eval_never_trusts_remote_code_from_the_run_directory(tmp_path: Path,
                                                               monkeypatch) -> None:
    import retain.models.loading as loading
    from retain.config import dump_config, load_config

    run_dir = tmp_path / "old" / "run"
    (run_dir / "adapters" / "task_1").mkdir(parents=True)
    cfg = load_config(None, ["name=other", "model.trust_remote_code=true"])
    (run_dir / "config.yaml").write_text(dump_config(cfg))
    seen: list[bool] = []

    class Stop(Exception):
        pass

    def fake_load(model_cfg, device=None):
        seen.append(model_cfg.trust_remote_code)
        raise Stop

    monkeypatch.setattr(loading, "load_backbone", fake_load)
    for flags, expected in (([], False), (["--trust-remote-code"], True)):
        result = runner.invoke(app, ["eval", str(run_dir), *flags])
        assert isinstance(result.exception, Stop), result.output
        assert seen[-1] is expected
    assert "--trust-remote-code" in runner.invoke(app, ["eval", str(run_dir)]).output
