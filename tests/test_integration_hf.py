"""retain's methods inside a plain `transformers.Trainer`: the same run as `retain run`.

Same stream, method and seed, with the Trainer's optimizer, schedule and clipping matched to
retain's (AdamW, cosine with the same warm-up, clip at 1) and retain's fixed data order: the
score matrices are identical, and so are the per-example results, every step's loss and the
exported adapters, bit for bit.
"""

from __future__ import annotations

import json

import pytest
from accelerate.state import AcceleratorState

from tests.integration_hf_helpers import (
    adapter_difference,
    examples_equal,
    retain_run,
    step_records,
    trainer_run,
)


@pytest.fixture
def fresh_precision():
    """accelerate keeps one precision per process unless its state is reset (as
    TrainingArguments resets it): reset before and after, so other tests build their own."""
    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.parametrize(("method", "accum", "bf16"), [
    ("sequential", 2, False),  # gradient accumulation
    ("fixed", 1, False),
    ("sequential", 1, True),  # TrainingArguments(bf16=True): autocast on the CPU as well
])
def test_the_trainer_gives_the_score_matrix_of_retain_run(
    tmp_path, request, method, accum, bf16
) -> None:
    precision = ["train.mixed_precision=bf16"] if bf16 else []
    if bf16:
        request.getfixturevalue("fresh_precision")
    cli = retain_run(tmp_path / "cli", method, accum, *precision).run_dir
    hf = trainer_run(tmp_path / "hf", method, accum, bf16=bf16).run_dir
    assert ("mixed_precision: bf16" in (hf / "config.yaml").read_text()) == bf16
    assert (cli / "scores.csv").read_text() == (hf / "scores.csv").read_text()
    assert examples_equal(cli, hf)
    assert adapter_difference(cli, hf) == 0.0
    ours, theirs = step_records(cli), step_records(hf)
    assert len(ours) == 12 + 3  # parity's own 12 steps, then box_colour's 3
    keys = ("step", "task", "loss", "losses", "lr", "samples", "replayed", "tokens")
    assert [{k: r[k] for k in keys} for r in ours] == [{k: r[k] for k in keys} for r in theirs]
    if method == "fixed":  # the comparison covers replayed rows, not only task rows
        assert sum(r["replayed"] for r in theirs if r["task"] == 1) > 0
    # the whole run directory: metrics with intervals, report, per-task adapters
    metrics = json.loads((hf / "metrics.json").read_text())
    assert metrics["ap"] == json.loads((cli / "metrics.json").read_text())["ap"]
    assert "ap" in metrics["ci"]
    for name in ("report.html", "config.yaml", "fingerprint.json", "examples.npz"):
        assert (hf / name).exists(), name
    assert (hf / "adapters" / "task_2" / "adapter_config.json").exists()

