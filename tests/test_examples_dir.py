"""`examples/`: its data are our script's output, its stream loads anywhere, and it runs."""

from __future__ import annotations

import filecmp
import json
import runpy
import warnings
from pathlib import Path

import pytest

from retain.config import load_config
from retain.data.stream_file import parse_stream_spec, read_stream_yaml
from retain.data.streams import load_stream_file
from retain.data.task_spec import TaskSpec
from retain.train.loop import run

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_committed_data_are_what_the_script_writes(tmp_path: Path) -> None:
    write_examples = runpy.run_path(str(EXAMPLES / "make_data.py"))["write_examples"]
    written = write_examples(tmp_path)
    committed = sorted(p.relative_to(EXAMPLES / "data") for p in (EXAMPLES / "data").rglob("*.*"))
    assert sorted(p.relative_to(tmp_path) for p in written) == committed
    for rel in committed:
        assert filecmp.cmp(tmp_path / rel, EXAMPLES / "data" / rel, shallow=False), rel


def test_example_stream_loads_from_any_folder(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overlap between validation and test
        stream = load_stream_file(EXAMPLES / "stream.yaml")
    assert stream.name == "example-stream"
    kinds = {t.name: (t.scoring, t.metric) for t in stream.tasks}
    assert kinds == {
        "parity": ("loglik", "accuracy"),
        "box_colour": ("generate", "token_f1"),
        "trip_summary": ("generate", "rouge_l"),
        "simplify": ("generate", "sari"),
        "complete_code": ("generate", "edit_similarity"),
        "largest": ("generate", "choice_letter"),
    }
    tasks = {t.name: t for t in stream.tasks}
    assert tasks["parity"].budget.steps == 12 and tasks["parity"].budget.lr == 1e-3
    assert tasks["trip_summary"].budget.epochs == 1
    assert tasks["box_colour"].budget.max_train == 32
    assert all(len(t.valid) == 8 and len(t.test) == 12 for t in stream.tasks)


def test_readme_documents_the_example() -> None:
    readme = (EXAMPLES.parent / "README.md").read_text()
    assert "## Your own stream (YAML)" in readme
    assert "retain run examples/run.yaml model.name_or_path=tiny-random" in readme


def test_readme_stream_files_are_valid_specs() -> None:
    """The stream files the README shows (its own and TRACE's) pass validation as written."""
    readme = (EXAMPLES.parent / "README.md").read_text()
    section = readme.split("## Your own stream (YAML)", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0] for b in section.split("```yaml\n")[1:]]
    assert len(blocks) == 2
    names = []
    for block in blocks:
        _, specs = parse_stream_spec(read_stream_yaml(block))
        names.append([s.name for s in specs])
    assert names[0] == ["qa"] and len(names[1]) == 8
    missing = [key for key in TaskSpec.model_fields if f"`{key}`" not in section]
    assert not missing, f"README's stream section does not name task keys {missing}"


def test_example_runs_end_to_end_on_the_tiny_model(tmp_path: Path) -> None:
    config = load_config(
        EXAMPLES / "run.yaml",
        [
            "model.name_or_path=tiny-random",
            f"data.stream={EXAMPLES / 'stream.yaml'}",
            f"output_dir={tmp_path}",
            "train.steps_per_task=2",
            "train.progress=false",
            "eval.figures=false",
        ],
    )
    result = run(config)
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert set(metrics["scoring"]) == {
        "parity", "box_colour", "trip_summary", "simplify", "complete_code", "largest"
    }
    assert (result.run_dir / "report.html").exists()
