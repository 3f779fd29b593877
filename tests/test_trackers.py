"""Step losses, replay events, evaluation rows and final metrics reach TensorBoard."""

from __future__ import annotations

from pathlib import Path

import pytest

from retain.storage.trackers import flat_config, flat_numbers
from retain.train.loop import run
from tests.test_engine import tiny_config


def test_flat_numbers_keep_numeric_leaves_only() -> None:
    record = {"loss": 1.5, "losses": {"task": 1.0, "replay": 0.5}, "name": "x", "ok": True,
              "lr": None, "steps": 3}
    assert flat_numbers(record, "train") == {
        "train/loss": 1.5, "train/losses/task": 1.0, "train/losses/replay": 0.5,
        "train/steps": 3.0,
    }
    assert flat_config({"a": {"b": [1, 2], "c": None, "d": 2}}) == {
        "a.b": "[1, 2]", "a.c": "None", "a.d": 2}


def test_tensorboard_receives_the_run(tmp_path: Path) -> None:
    # tensorboard is a dev dependency: the test set-up installs it
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run(tiny_config(tmp_path, "name=tb", "train.report_to=tensorboard",
                             "data.num_tasks=2", "methods=[fixed]", "replay.interval_units=0"))
    files = list((result.run_dir / "trackers").rglob("events.out.tfevents.*"))
    assert files, "no TensorBoard event file"
    acc = EventAccumulator(str(files[0].parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert "train/loss" in tags and "train/losses/task" in tags
    assert [e.step for e in acc.Scalars("train/loss")] == list(range(1, 13))
    assert any(t.startswith("eval/scores/") for t in tags)
    assert any(t.startswith("replay/") for t in tags)
    final = acc.Scalars("final/ap")
    assert final and final[0].value == pytest.approx(result.metrics["ap"], abs=1e-4)
