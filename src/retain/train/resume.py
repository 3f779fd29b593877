"""Saving and resuming a run: what a checkpoint holds, and when a resume must be refused.

A run directory belongs to one run. Before anything is written the directory is locked and
settled: resumed (its checkpoint's config matches, up to result-neutral keys), cleared
(`--overwrite`), or refused (files that are no checkpoint of this run). A checkpoint carries the
data fingerprint of the encoded stream, so a resume after the data changed is refused instead of
mixing old and new test sets in one matrix.
"""

from __future__ import annotations

from contextlib import suppress
from typing import TYPE_CHECKING, Any

from retain.config import RunConfig, config_differences, dump_config
from retain.storage.examples import ExampleResults
from retain.storage.files import write_json, write_text_atomic
from retain.storage.fingerprint import (
    FINGERPRINT_FILE,
    data_fingerprint,
    fingerprint_differences,
)
from retain.storage.rundir import (
    RunLock,
    check_run_dir_path,
    clear_run_dir,
    ensure_run_dir,
    refuse_clearing_foreign,
    refuse_foreign_files,
)
from retain.train.checkpoint import (
    has_checkpoint,
    load_newest,
    rng_state,
    save_rotating,
    set_rng_state,
)
from retain.yaml_io import load_yaml_file

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator

    from retain.train.loop import ContinualTrainer

CHECKPOINTS = "checkpoints"
"""Under the run directory: `latest` and `previous` (see train/checkpoint.py)."""


class ResumeError(ValueError):
    """The run directory holds a checkpoint this run must not continue; the message says why."""


# ----------------------------------------------------------------- the run directory
def open_run_dir(config: RunConfig, overwrite: bool, accelerator: Accelerator) -> RunLock:
    """Lock the run directory and settle what is in it, before the run writes anything.

    Only the main process locks and writes; the others wait until it is done.
    """
    lock = RunLock(config.run_dir)
    if accelerator.is_main_process:
        ensure_run_dir(config.run_dir)
        lock.acquire()
        try:
            _settle(config, overwrite)
        except BaseException:
            lock.release()
            raise
    accelerator.wait_for_everyone()
    return lock


def preflight(config: RunConfig, overwrite: bool) -> None:
    """Whether the run may use its directory, checked without a lock or a write (so `bench`
    checks every method's directory before the first trains)."""
    run_dir = config.run_dir
    check_run_dir_path(run_dir)
    if not run_dir.is_dir():
        return
    if overwrite:
        refuse_clearing_foreign(run_dir)
    elif has_checkpoint(run_dir / CHECKPOINTS):
        check_config_matches(config)
    else:
        refuse_foreign_files(run_dir)


def _settle(config: RunConfig, overwrite: bool) -> None:
    preflight(config, overwrite)
    run_dir = config.run_dir
    if overwrite:
        removed = clear_run_dir(run_dir)
        if removed:
            print(f"--overwrite: cleared {run_dir} ({removed} entries), starting afresh")
    write_text_atomic(run_dir / "config.yaml", dump_config(config))


def check_config_matches(config: RunConfig) -> None:
    """A checkpoint continues only under its own config; the refusal names each key that differs
    (result-neutral keys such as `train.progress` may change)."""
    path = config.run_dir / "config.yaml"
    if not path.exists():
        return  # the data fingerprint in the checkpoint is still checked
    try:
        old = load_yaml_file(path, "run config")
    except (OSError, ValueError) as exc:  # any unreadable file gets the same message
        raise ResumeError(f"{path} is unreadable ({exc}); restore it from a copy, or start "
                          "afresh with --overwrite") from None
    if not isinstance(old, dict):
        raise ResumeError(f"{path} is no run configuration; start afresh with --overwrite")
    with suppress(ValueError):  # fill keys added since with their defaults, as the run used
        old = RunConfig.model_validate(old).model_dump(mode="json")
    diffs = config_differences(old, config.model_dump(mode="json"))
    if diffs:
        raise ResumeError(
            f"{config.run_dir} holds a checkpoint of another configuration ({'; '.join(diffs)}); "
            "resume with the same settings, start afresh with --overwrite (or --fresh), "
            "or choose another name=..."
        )


# ----------------------------------------------------------------- saving
def run_fingerprint(trainer: ContinualTrainer) -> dict[str, Any]:
    """The data fingerprint of the trainer's encoded stream, computed once."""
    if trainer.fingerprint is None:
        trainer.fingerprint = data_fingerprint(
            trainer.config,
            trainer.store,
            trainer.ctx.task_samples,
            trainer.evaluator.task_sets,
            trainer.evaluator.general,
        )
    return trainer.fingerprint


def write_fingerprint(trainer: ContinualTrainer) -> None:
    if trainer.is_main:
        write_json(trainer.run_dir / FINGERPRINT_FILE, run_fingerprint(trainer))


def trainable_state(trainer: ContinualTrainer) -> dict[str, torch.Tensor]:
    from retain.models.adapters import trainable_state_dict
    from retain.models.sharding import is_sharded
    from retain.train.fsdp import full_trainable_state

    if is_sharded(trainer.model):
        return full_trainable_state(trainer.model)
    # views suffice: the checkpoint is written before the next optimizer step
    model = trainer.accelerator.unwrap_model(trainer.model)
    return trainable_state_dict(model, copy=False)


def plugin_states(trainer: ContinualTrainer) -> dict[str, Any]:
    """Every plugin's state; a plugin tensor that lives in a sharded model is read whole."""
    from retain.models.sharding import gathered

    with gathered(trainer.model):
        return {f"{i}:{p.name}": p.state_dict() for i, p in enumerate(trainer.plugins)}


def save_state(trainer: ContinualTrainer, task: int, step: int, phase: str) -> None:
    """Everything needed to continue exactly from (task, step, phase), and the fingerprint."""
    state: dict[str, Any] = {
        "position": {"task": task, "step": step, "phase": phase},
        "global_step": trainer.ctx.global_step,
        "trainable": trainable_state(trainer),
        "plugins": plugin_states(trainer),
        "matrix": trainer.matrix.to_json(),
        "counters": dict(trainer.ctx.counters),
        "rng": rank_rng_states(trainer),
        "log_offset": trainer.log.offset(),
        "examples": trainer.examples.to_dict(),
        "ties": trainer.ties,
        "fingerprint": run_fingerprint(trainer),
    }
    if phase == "train":
        from retain.train.fsdp import optimizer_state

        state["optimizer"] = optimizer_state(trainer.model, trainer.optimizer)
        state["scheduler"] = trainer.scheduler.state_dict()
    if trainer.is_main:
        save_rotating(trainer.run_dir / CHECKPOINTS, state)
    trainer.accelerator.wait_for_everyone()


# ----------------------------------------------------------------- resuming
def restore_state(trainer: ContinualTrainer, state: dict[str, Any]) -> None:
    from retain.eval.matrix import ScoreMatrix
    from retain.models.adapters import load_trainable_state_dict

    # plugins first: an adapter method sets which of its parameters train (and restores the
    # frozen ones) before the trainable parameters are matched by name
    restore_plugins(trainer, state)
    from retain.models.sharding import is_sharded
    from retain.train.fsdp import load_full_trainable_state

    model = trainer.accelerator.unwrap_model(trainer.model)
    if is_sharded(model):
        load_full_trainable_state(model, state["trainable"])
    else:
        load_trainable_state_dict(model, state["trainable"])
    trainer.matrix = ScoreMatrix.from_json(state["matrix"])
    trainer.ctx.counters = dict(state["counters"])
    trainer.ctx.global_step = int(state["global_step"])
    trainer.log.truncate(int(state["log_offset"]))
    trainer.examples = ExampleResults.from_dict(state["examples"])
    trainer.ties = {k: dict(v) for k, v in state.get("ties", {}).items()}


def rank_rng_states(trainer: ContinualTrainer) -> list[dict[str, Any]]:
    """Every rank's generator states (dropout draws differ per rank), in rank order."""
    mine = rng_state()
    if trainer.accelerator.num_processes == 1:
        return [mine]
    from accelerate.utils import gather_object

    return list(gather_object([mine]))


def restore_rng(trainer: ContinualTrainer, state: dict[str, Any]) -> None:
    """This rank's generator states (rank 0's when the run had fewer processes before)."""
    states = state["rng"]
    rank = trainer.accelerator.process_index
    set_rng_state(states[rank] if rank < len(states) else states[0])


def restore_plugins(trainer: ContinualTrainer, state: dict[str, Any]) -> None:
    """Every plugin's state, before the task it was saved in restarts: a plugin's
    `on_task_start` sees it and keeps it when it resumes that very task (mid-task)."""
    for i, p in enumerate(trainer.plugins):
        p.load_state_dict(state["plugins"].get(f"{i}:{p.name}", {}))


def check_fingerprint(trainer: ContinualTrainer, state: dict[str, Any]) -> None:
    """Refuse a checkpoint made on other encoded data than the run has now."""
    stored = state.get("fingerprint")
    where = trainer.run_dir
    if not isinstance(stored, dict):
        raise ResumeError(
            f"the checkpoint in {where / CHECKPOINTS} has no data fingerprint (written by an "
            "older retain), so it cannot be checked against the data; start afresh with "
            "--overwrite (or --fresh)"
        )
    current = run_fingerprint(trainer)
    diffs = fingerprint_differences(stored, current)
    if stored.get("version") != current["version"]:
        diffs = [f"the fingerprint version ({stored.get('version')} → {current['version']})"]
    if diffs:
        raise ResumeError(
            f"cannot resume {where}: since its checkpoint was written, {'; '.join(diffs)}, so old "
            "and new scores would mix in one matrix; restore the data, start afresh with "
            "--overwrite (or --fresh), or choose another name=..."
        )


def load_resume_state(trainer: ContinualTrainer) -> dict[str, Any] | None:
    """The restored checkpoint state to continue from, or None for a fresh start.

    Says which checkpoint it resumes from and why a newer one was skipped; rewrites
    `scores.csv` from the checkpoint's matrix (a deleted one comes back).
    """
    found = load_newest(trainer.run_dir / CHECKPOINTS)
    if found is None:
        return None
    state = found.state
    check_fingerprint(trainer, state)
    if trainer.is_main:
        for note in found.skipped:
            print(f"checkpoint {note}; falling back to the previous one, {found.path}")
        found.set_damaged_aside()
    pos = state["position"]
    if trainer.is_main:
        print(
            f"resuming {trainer.run_dir} from task {pos['task'] + 1} step {pos['step']} "
            f"({pos['phase']})"
        )
    restore_state(trainer, state)
    if pos["phase"] == "done":  # mid-task: train_task restores it after on_task_start
        restore_rng(trainer, state)
    if trainer.is_main:
        trainer.matrix.to_csv(trainer.run_dir / "scores.csv")
    write_fingerprint(trainer)
    return state
