"""The whole loop end to end on a tiny random model: run directory, resume after a kill."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from retain.config import RunConfig, load_config
from retain.eval.matrix import ScoreMatrix
from retain.train.loop import run
from tests.killing import (
    kill_during,
    run_cli,
    step_records,
    whole_beside_crashed_and_resumed,
)

TINY = [
    "model.name_or_path=tiny-random",
    "model.lora.target_modules=[q_proj,v_proj]",
    "data.stream=builtin",
    "data.max_train_per_task=32",
    "data.max_test_per_task=6",
    "data.max_length=128",
    "data.valid_per_task=4",
    "train.steps_per_task=6",
    "train.batch_size=4",
    "train.lr=5e-3",
    "train.progress=false",
    "eval.batch_size=8",
    "eval.figures=false",  # ~1 s a run; the tests that read figures turn them on
]


def tiny_config(tmp_path: Path, *extra: str):
    return load_config(None, [*TINY, f"output_dir={tmp_path}", *extra])


def test_sequential_run_writes_the_whole_run_directory(tmp_path: Path) -> None:
    result = run(tiny_config(tmp_path, "name=seq", "eval.figures=true"))
    run_dir = result.run_dir
    for name in ("config.yaml", "environment.json", "scores.csv", "metrics.json", "log.jsonl",
                 "report.html", "score_matrix.png", "task_curves.png"):
        assert (run_dir / name).exists(), name
    matrix = ScoreMatrix.from_csv(run_dir / "scores.csv")
    assert matrix.R.shape == (6, 5)
    assert matrix.is_complete()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["ap"] == pytest.approx(matrix.R[5].mean(), abs=1e-3)
    assert "definitions" in metrics and metrics["cost"]["optimizer_steps"] == 30
    assert metrics["cost"]["cpu_seconds"] > 0
    for t in range(1, 6):
        assert (run_dir / "adapters" / f"task_{t}" / "adapter_config.json").exists()
    steps = [r for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines())
             if r["type"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, 31))
    assert all(r["tokens_per_s"] > 0 and "task" in r["losses"] for r in steps)


def test_training_lowers_the_task_loss(tmp_path: Path) -> None:
    result = run(tiny_config(tmp_path, "name=learn", "train.steps_per_task=25",
                             "model.finetune=full", "train.lr=3e-3"))
    steps = [r for r in map(json.loads, (result.run_dir / "log.jsonl").read_text().splitlines())
             if r["type"] == "step" and r["task"] == 0]
    first = sum(r["loss"] for r in steps[:3]) / 3
    last = sum(r["loss"] for r in steps[-3:]) / 3
    assert last < 0.7 * first


def test_epochs_per_task_sets_the_number_of_optimizer_steps(tmp_path: Path) -> None:
    """32 training rows, 1.5 epochs, 4 rows × 2 accumulated micro-batches a step: 6 steps."""
    result = run(tiny_config(tmp_path, "name=ep", "train.steps_per_task=null",
                             "train.epochs_per_task=1.5", "train.grad_accum=2",
                             "data.num_tasks=2"))
    steps = [r for r in map(json.loads, (result.run_dir / "log.jsonl").read_text().splitlines())
             if r["type"] == "step"]
    assert [r["task_step"] for r in steps if r["task"] == 0] == [1, 2, 3, 4, 5, 6]
    assert all(r["samples"] == 8 for r in steps)
    assert result.metrics["cost"]["optimizer_steps"] == 12


def test_log_every_logs_every_nth_step_and_the_last(tmp_path: Path) -> None:
    result = run(tiny_config(tmp_path, "name=le", "train.log_every=4", "data.num_tasks=2"))
    steps = [r for r in map(json.loads, (result.run_dir / "log.jsonl").read_text().splitlines())
             if r["type"] == "step"]
    assert [(r["task"], r["task_step"]) for r in steps] == [(0, 4), (0, 6), (1, 4), (1, 6)]
    assert result.metrics["cost"]["optimizer_steps"] == 12


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_lr_schedule_constant_keeps_the_rate_and_cosine_decays_it(
    tmp_path: Path, schedule: str
) -> None:
    result = run(tiny_config(tmp_path, f"name={schedule}", "data.num_tasks=1",
                             "train.warmup_ratio=0.0", f"train.lr_schedule={schedule}"))
    lrs = [r["lr"] for r in map(json.loads, (result.run_dir / "log.jsonl").read_text().splitlines())
           if r["type"] == "step"]
    assert len(lrs) == 6
    if schedule == "constant":
        assert lrs == pytest.approx([5e-3] * 6)
    else:
        assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False)) and lrs[-1] < 5e-3 / 2


def test_multitask_trains_every_stage_on_all_tasks(tmp_path: Path) -> None:
    from retain.train.loop import ContinualTrainer

    trainer = ContinualTrainer(tiny_config(tmp_path, "name=mt", "methods=[multitask]"))
    parts = trainer.parts
    pool = parts.plugins[0].task_data(parts.ctx, 0, parts.ctx.task_samples[0])
    assert sorted(pool) == list(range(len(parts.store)))


RESUME_SETTINGS = {
    "fixed": ["replay.interval_units=0"],
    "mssr": [],
    # thresholds at 0 so that the triggers fire within 8 steps of a tiny model
    "loss_triggered": ["replay.loss_delta=0.0", "replay.loss_ema_decay=0.5"],
    "accuracy_triggered": ["replay.probe_drop=0.0", "replay.probe_size=4"],
}


def _cli(run_dir_parent: Path, name: str, method: str) -> list[str]:
    return [sys.executable, "-m", "retain", "run", "/dev/null", *TINY,
            f"output_dir={run_dir_parent}", f"name={name}", "train.checkpoint_every=2",
            "data.num_tasks=3", "train.steps_per_task=8", f"methods=[{method}]",
            *RESUME_SETTINGS[method]]


REAL_KILL = "mssr"  # the plain process's one real SIGKILL; the others crash in-process


@pytest.mark.slow  # three runs of 24 steps each
@pytest.mark.parametrize("method", list(RESUME_SETTINGS))
def test_killed_run_resumes_to_the_same_result(tmp_path: Path, method: str) -> None:
    """Killed in the middle of task 2 (a real SIGKILL of the process for MSSR, a crash inside
    this process for the others), the same command started again, compared with a run that
    was never interrupted: same scores, same adapter weights, same per-step losses and replay
    (the buffer, MSSR's memory and the samplers' generators are in the checkpoint)."""
    if method == REAL_KILL:
        # only the killed stretch runs in a process of its own, with this process's threads
        # (the same float sums); the uninterrupted run and the resume run in this process
        env = {**os.environ, "PYTHONUNBUFFERED": "1",
               "OMP_NUM_THREADS": str(torch.get_num_threads())}
        run_cli(_cli(tmp_path, "whole", method)[3:])
        kill_during(_cli(tmp_path, "killed", method), tmp_path / "killed", env)
        output = run_cli(_cli(tmp_path, "killed", method)[3:])
    else:
        output = whole_beside_crashed_and_resumed(
            lambda name: _cli(tmp_path, name, method)[3:], tmp_path)
    assert (tmp_path / "killed" / "checkpoints" / "latest").exists()
    assert "resuming" in output

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert (whole / "scores.csv").read_text() == (killed / "scores.csv").read_text()
    a = load_file(str(whole / "adapters" / "task_3" / "adapter_model.safetensors"))
    b = load_file(str(killed / "adapters" / "task_3" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    losses = [(r["step"], r["loss"], r["replayed"]) for r in step_records(whole)]
    assert losses == [(r["step"], r["loss"], r["replayed"]) for r in step_records(killed)]
    if method == "accuracy_triggered":
        # a tiny random model learns too little for a probe to see a drop within 8 steps; the
        # probes themselves (their sample draws and best scores) must resume exactly
        probes = [json.loads((d / "metrics.json").read_text())["cost"]["extra_forward_passes"]
                  for d in (whole, killed)]
        assert probes[0] == probes[1] > 0
    else:
        assert sum(r[2] for r in losses) > 0, "the run must actually replay"
    events = [json.loads(x) for x in (whole / "log.jsonl").read_text().splitlines()
              if '"replay_event"' in x]
    assert events == [json.loads(x) for x in (killed / "log.jsonl").read_text().splitlines()
                      if '"replay_event"' in x]


DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def _with_general_suite(tmp_path: Path, *overrides: str) -> RunConfig:
    """A tiny 2-step-per-task run that also scores a small general suite from the shared data."""
    return tiny_config(
        tmp_path, "train.steps_per_task=2", f"data.data_dir={DATA}", "eval.general.enabled=true",
        "eval.general.mmlu_per_subject=1", "eval.general.arc_easy=4", *overrides,
    )


@pytest.mark.skipif(not DATA.is_dir(), reason=f"shared benchmark data not found at {DATA}")
def test_general_ability_columns_are_scored_every_stage(tmp_path: Path) -> None:
    cfg = _with_general_suite(
        tmp_path, "name=general", "data.num_tasks=2",
        "eval.general.mmlu_subjects=[anatomy,astronomy,virology]",
        "eval.general.wikitext_paragraphs=3",
    )
    result = run(cfg)
    matrix = ScoreMatrix.from_csv(result.run_dir / "scores.csv")
    assert matrix.general == ["mmlu", "arc_easy", "wikitext_ppl"]
    assert matrix.G.shape == (3, 3) and not torch.isnan(torch.tensor(matrix.G)).any()
    assert (matrix.G[:, 2] > 1).all()  # perplexity of a random byte model is far above 1
    expected = (matrix.G[2, 0] - matrix.G[0, 0] + matrix.G[2, 1] - matrix.G[0, 1]) / 2
    assert result.metrics["general_delta"] == pytest.approx(expected, abs=1e-3)


def test_a_replay_run_that_replayed_nothing_says_so(tmp_path: Path) -> None:
    quiet = run(tiny_config(tmp_path, "name=quiet", "methods=[fixed]", "data.num_tasks=2",
                            "replay.interval_units=1000"))
    assert quiet.metrics["cost"]["replayed_samples"] == 0
    assert any("replayed nothing" in w for w in quiet.metrics["warnings"])
    log = (quiet.run_dir / "log.jsonl").read_text()
    assert '"type": "warning"' in log and "replayed nothing" in log
    assert "replayed nothing" in (quiet.run_dir / "report.html").read_text()
    busy = run(tiny_config(tmp_path, "name=busy", "methods=[fixed]", "data.num_tasks=2",
                           "replay.interval_units=0"))
    assert busy.metrics["cost"]["replayed_samples"] > 0 and busy.metrics["warnings"] == []


@pytest.mark.skipif(not DATA.is_dir(), reason=f"shared benchmark data not found at {DATA}")
def test_the_general_suite_can_be_scored_at_the_ends_only(tmp_path: Path) -> None:
    cfg = _with_general_suite(
        tmp_path, "name=ends", "data.num_tasks=3", "eval.general.mmlu_subjects=[anatomy]",
        "eval.general.wikitext_paragraphs=2", "eval.general.every_task=false",
    )
    result = run(cfg)
    matrix = ScoreMatrix.from_csv(result.run_dir / "scores.csv")
    scored = ~torch.isnan(torch.tensor(matrix.G)).any(dim=1)
    assert scored.tolist() == [True, False, False, True]
    expected = sum(matrix.G[3, m] - matrix.G[0, m] for m in range(2)) / 2
    assert result.metrics["general_delta"] == pytest.approx(expected, abs=1e-3)
