"""The SFTTrainer example (examples/sft_trainer.py) on the tiny model: it runs, its score
matrix is `retain run examples/run.yaml`'s (the example's SFTConfig matches run.yaml), and the
eval_dataset it also hands the trainer is evaluated by the trainer on its own, apart from
retain's matrix."""

from __future__ import annotations

import importlib.util
import json

import pytest

from retain.config import load_config
from retain.train.loop import run
from tests.integration_hf_helpers import REPO, examples_equal, step_records

pytest.importorskip("trl")

SMALL = [
    "data.num_tasks=2",
    "data.max_train_per_task=16",
    "data.max_test_per_task=4",
    "train.steps_per_task=2",
    "train.progress=false",
]


def _example():
    path = REPO / "examples" / "sft_trainer.py"
    spec = importlib.util.spec_from_file_location("sft_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_sft_example_runs_and_matches_retain_run(tmp_path) -> None:
    result, trainer = _example().main(
        ["--model", "tiny-random", "--methods", "sequential", "--output", str(tmp_path / "sft"),
         *SMALL]
    )
    cli = run(load_config(REPO / "examples" / "run.yaml", [
        "model.name_or_path=tiny-random", f"data.stream={REPO / 'examples' / 'stream.yaml'}",
        f"output_dir={tmp_path / 'cli'}", "name=cli", *SMALL,
    ]))
    ours, theirs = cli.run_dir, result.run_dir
    assert (ours / "scores.csv").read_text() == (theirs / "scores.csv").read_text()
    assert examples_equal(ours, theirs)
    assert [r["loss"] for r in step_records(ours)] == [r["loss"] for r in step_records(theirs)]
    # the trainer evaluated its own eval_dataset after each task (eval_strategy="epoch")
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    assert evals and all(h["eval_loss"] > 0 for h in evals)
    assert json.loads((theirs / "metrics.json").read_text())["ap"] == result.metrics["ap"]
    # retain's evaluation and metrics reached the trainer's log (and so its report_to trackers)
    logged = {k: v for h in trainer.state.log_history for k, v in h.items()}
    assert logged["retain/ap"] == pytest.approx(result.metrics["ap"])
    assert "retain/eval/box_colour" in logged and logged["retain/stage"] == 2
