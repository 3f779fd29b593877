"""Resuming a run on a tiny model: refused on other data or config, robust to damaged files."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from retain.data.streams import load_stream
from retain.data.task import Example, TaskStream
from retain.train.loop import run
from tests.conftest import FinishedRun
from tests.killing import Crash, crash_at
from tests.test_engine import tiny_config

SMALL = ("data.num_tasks=2", "train.steps_per_task=2")


def _changed(stream: TaskStream, split: str) -> TaskStream:
    """The same stream with one example of task 2 changed in `split`."""
    tasks = list(stream.tasks)
    task = tasks[1]
    examples = list(getattr(task, split))
    ex = examples[0]
    examples[0] = Example(ex.prompt + " please", ex.answer, ex.options)
    tasks[1] = dataclasses.replace(task, **{split: examples})
    return TaskStream(stream.name, tasks)


@pytest.mark.parametrize(("split", "words"), [("test", "tokenised evaluation sets differ"),
                                              ("train", "tokenised training samples differ")])
def test_resume_after_the_data_changed_is_refused(
    tmp_path: Path, finished_run: FinishedRun, split: str, words: str
) -> None:
    cfg = tiny_config(tmp_path, "name=r", *SMALL)
    stream = load_stream(cfg.data)
    finished_run(*SMALL, name="r")  # what run(cfg, stream=stream) writes
    with pytest.raises(ValueError) as err:
        run(cfg, stream=_changed(stream, split))
    message = str(err.value)
    assert words in message and "cannot resume" in message and "--overwrite" in message
    run(cfg, stream=stream)  # the same data still resumes


def test_the_fingerprint_is_in_the_run_directory_and_the_checkpoint(
    finished_run: FinishedRun,
) -> None:
    from retain.train.checkpoint import load_checkpoint

    result = finished_run(*SMALL)
    written = json.loads((result.run_dir / "fingerprint.json").read_text())
    assert written == result.metrics["fingerprint"]
    assert len(written["digest"]) == 64 and written["parts"]["seed"] == 42
    state = load_checkpoint(result.run_dir / "checkpoints" / "latest")
    assert state is not None and state["fingerprint"] == written


def test_a_changed_config_names_each_key_and_presentation_keys_may_change(
    tmp_path: Path, finished_run: FinishedRun
) -> None:
    finished_run(*SMALL, name="c")
    with pytest.raises(ValueError) as err:
        run(tiny_config(tmp_path, "name=c", *SMALL, "train.lr=1e-3", "model.lora.r=4"))
    message = str(err.value)
    assert "train.lr: 0.005 → 0.001" in message and "model.lora.r: 8 → 4" in message
    result = run(tiny_config(tmp_path, "name=c", *SMALL, "train.log_every=2",
                             "train.progress=true"))
    assert result.resumed


def test_a_damaged_latest_checkpoint_resumes_from_the_previous(tmp_path: Path, capsys) -> None:
    cfg = tiny_config(tmp_path, "name=d", "data.num_tasks=3", "train.steps_per_task=3")
    first = run(cfg).run_dir
    scores = (first / "scores.csv").read_text()
    adapter = first / "adapters" / "task_3" / "adapter_model.safetensors"
    weights = load_file(str(adapter))
    tensors = first / "checkpoints" / "latest" / "tensors.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:-64])
    capsys.readouterr()

    result = run(cfg)
    out = capsys.readouterr().out
    assert "falling back to the previous one" in out and str(tensors.parent) in out
    assert "from task 2 step 0 (done)" in out  # task 3 is trained again, from the end of task 2
    assert result.resumed and (first / "scores.csv").read_text() == scores
    for key, value in load_file(str(adapter)).items():
        torch.testing.assert_close(value, weights[key], rtol=0, atol=0)
    # the damaged one was set aside: the good checkpoints are latest and previous again
    assert (first / "checkpoints" / "latest.damaged").exists()
    assert run(cfg).resumed


def test_a_deleted_scores_csv_is_rewritten_from_the_checkpoint(
    tmp_path: Path, finished_run: FinishedRun
) -> None:
    cfg = tiny_config(tmp_path, "name=s", *SMALL)
    run_dir = finished_run(*SMALL, name="s").run_dir
    scores = (run_dir / "scores.csv").read_text()
    (run_dir / "scores.csv").unlink()
    run(cfg)
    assert (run_dir / "scores.csv").read_text() == scores


def test_a_folder_with_files_but_no_checkpoint_is_cleared_only_when_asked(
    tmp_path: Path, capsys
) -> None:
    cfg = tiny_config(tmp_path, "name=o", *SMALL)
    cfg.run_dir.mkdir(parents=True)
    (cfg.run_dir / "config.yaml").write_text("name: o\nmethods: [sequential]\nmodel: {}\n"
                                             "train: {}\n")
    (cfg.run_dir / "metrics.json").write_text("{}")
    (cfg.run_dir / "notes.txt").write_text("mine")
    for overwrite in (False, True):  # a file no run writes is named, and never deleted
        with pytest.raises(ValueError, match="notes.txt"):
            run(cfg, overwrite=overwrite)
    assert (cfg.run_dir / "notes.txt").read_text() == "mine"
    (cfg.run_dir / "notes.txt").unlink()
    with pytest.raises(ValueError, match="--overwrite"):
        run(cfg)
    capsys.readouterr()
    result = run(cfg, overwrite=True)
    assert "--overwrite: cleared" in capsys.readouterr().out
    assert result.metrics["ap"] is not None


def test_a_start_that_failed_before_its_first_checkpoint_is_simply_rerun(tmp_path: Path) -> None:
    from retain.train.loop import ContinualTrainer

    cfg = tiny_config(tmp_path, "name=u", *SMALL)
    ContinualTrainer(cfg)  # built, never run: config.yaml and an empty log
    assert not run(cfg).resumed


def test_two_trainers_on_one_directory_are_refused(tmp_path: Path) -> None:
    from retain.train.loop import ContinualTrainer

    cfg = tiny_config(tmp_path, "name=l", *SMALL)
    holder = ContinualTrainer(cfg)
    with pytest.raises(ValueError, match="is in use by pid"):
        ContinualTrainer(cfg)
    holder.close()
    ContinualTrainer(cfg).close()


def test_gap_closed_ignores_references_of_another_seed(tmp_path: Path) -> None:
    group = tmp_path / "g"
    # a budget at which the two references really differ, so a gap_closed could be computed
    budget = ("data.num_tasks=2", "train.steps_per_task=20", "model.finetune=full",
              "train.lr=3e-3", "data.max_test_per_task=24")
    aps = {}
    for method, seed in (("sequential", 1), ("multitask", 1), ("fixed", 42)):
        result = run(tiny_config(group, f"name={method}", f"methods=[{method}]", f"seed={seed}",
                                 *budget))
        aps[method] = result.metrics["ap"]
    assert aps["sequential"] != aps["multitask"]
    metrics = result.metrics
    assert metrics["gap_closed"] is None
    note = metrics["gap_closed_note"]
    assert "sequential reference" in note and "multitask reference" in note
    assert "seed: 1 → 42" in note


def test_a_task_resumed_in_mid_way_counts_the_time_it_spent_before_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A task's cost record after a crash and resume: its seconds and CPU seconds are those of
    the whole task (steps before the checkpoint included), not only the resumed process's.
    A fake clock moves 10 s per optimizer step, so the expected values are exact."""
    from retain.train import loop

    clock = [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(time, "process_time", lambda: clock[0])
    real_step = loop.train_step

    def ten_seconds_a_step(*args, **kwargs):
        clock[0] += 10.0
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", ten_seconds_a_step)
    cfg = tiny_config(tmp_path, "name=clock", "data.num_tasks=2", "train.steps_per_task=8",
                      "train.checkpoint_every=2")
    with crash_at(1, 6), pytest.raises(Crash):  # task 2 dies after 6 steps, saved at step 4
        run(cfg)
    result = run(cfg)  # task 2 again from step 4: 4 more steps
    assert result.resumed
    log = (result.run_dir / "log.jsonl").read_text().splitlines()
    ends = [r for r in map(json.loads, log) if r["type"] == "task_end"]
    assert [(r["task"], r["seconds"], r["cpu_seconds"]) for r in ends] == [
        (0, 80.0, 80.0), (1, 80.0, 80.0)
    ]
    cost = json.loads((result.run_dir / "metrics.json").read_text())["cost"]
    assert cost["tasks_timed_short"] == [] and cost["train_seconds"] == 160.0
