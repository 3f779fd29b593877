"""A Trainer-driven stream killed in mid-task resumes through the Trainer's own
`resume_from_checkpoint` and retain's state beside it, to the result of a run never killed."""

from __future__ import annotations

import json

import pytest
from transformers import Trainer, TrainerCallback

from retain.integrations.hf import Continual
from retain.models.tiny import tiny_model_and_tokenizer
from tests.integration_hf_helpers import (
    SETTINGS,
    adapter_difference,
    examples_equal,
    hf_args,
    retain_run,
    step_records,
)


class Killed(RuntimeError):
    pass


class KillAt(TrainerCallback):
    """Dies at one step of one task, after the Trainer saved the checkpoint before it."""

    def __init__(self, task: int, step: int) -> None:
        self.task, self.step = task, step

    def on_step_end(self, args, state, control, **kwargs) -> None:
        if args.output_dir.endswith(f"task_{self.task}") and state.global_step == self.step:
            raise Killed(f"killed at task {self.task} step {self.step}")


def _attach(tmp_path, callbacks=()) -> Continual:
    model, tokenizer = tiny_model_and_tokenizer()
    args = hf_args(tmp_path / "hf", save_strategy="steps", save_steps=2)
    trainer = Trainer(model=model, args=args, processing_class=tokenizer,
                      callbacks=list(callbacks))
    return Continual(trainer, None, [*SETTINGS, "methods=[fixed]", f"output_dir={tmp_path}",
                                     "name=trainer"])


def test_a_killed_stream_resumes_through_the_trainer_to_the_same_result(tmp_path) -> None:
    with pytest.raises(Killed):
        _attach(tmp_path, [KillAt(task=2, step=3)]).train()
    run_dir = tmp_path / "trainer"
    assert (tmp_path / "hf" / "task_2" / "checkpoint-2").is_dir()
    assert not (run_dir / "metrics.json").exists()
    result = _attach(tmp_path).train()  # a fresh process would do the same
    assert result.resumed
    cli = retain_run(tmp_path / "cli", "fixed").run_dir
    assert (cli / "scores.csv").read_text() == (run_dir / "scores.csv").read_text()
    assert examples_equal(cli, run_dir) and adapter_difference(cli, run_dir) == 0.0
    ours, theirs = step_records(cli), step_records(run_dir)
    assert [r["loss"] for r in ours] == [r["loss"] for r in theirs]  # no step twice or lost
    # the resumed task's cost counts its time before the checkpoint (its steps' seconds at least)
    cost = json.loads((run_dir / "metrics.json").read_text())["cost"]
    assert cost["tasks_timed_short"] == [] and cost["cpu_seconds"] is not None
