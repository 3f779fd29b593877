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
from retain.storage.files import write_json, write_text_atomic
from retain.storage.fingerprint import FINGERPRINT_FILE, fingerprint_differences
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
from retain.train.state import Position, RunState, StateFormatError
from retain.yaml_io import load_yaml_file

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator

    from retain.methods.base import Plugin
    from retain.train.components import Components

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
def write_fingerprint(parts: Components) -> None:
    if parts.is_main:
        write_json(parts.run_dir / FINGERPRINT_FILE, parts.data_fingerprint())


def trainable_state(parts: Components) -> dict[str, torch.Tensor]:
    from retain.models.adapters import trainable_state_dict
    from retain.models.sharding import is_sharded
    from retain.train.fsdp import full_trainable_state

    if is_sharded(parts.model):
        return full_trainable_state(parts.model)
    # views suffice: the checkpoint is written before the next optimizer step
    return trainable_state_dict(parts.inner_model(), copy=False)


def plugin_states(parts: Components) -> dict[str, Any]:
    """Every plugin's state; a plugin tensor that lives in a sharded model is read whole."""
    from retain.models.sharding import gathered

    with gathered(parts.model):
        return {f"{i}:{p.name}": p.state_dict() for i, p in enumerate(parts.plugins)}


def save_state(
    parts: Components,
    run: RunState,
    position: Position,
    optimizer: Any = None,
    scheduler: Any = None,
) -> None:
    """Everything needed to continue exactly from `position`: the run state (`to_state`), the
    trainable weights, the plugins, every rank's generators and, mid-task (phase `train`), the
    optimizer and schedule."""
    run.position = position
    run.log_offset = parts.log.offset()
    run.fingerprint = parts.data_fingerprint()
    state: dict[str, Any] = run.to_state()
    state["trainable"] = trainable_state(parts)
    state["plugins"] = plugin_states(parts)
    state["rng"] = rank_rng_states(parts.accelerator)
    if position.phase == "train":
        from retain.train.fsdp import optimizer_state

        state["optimizer"] = optimizer_state(parts.model, optimizer)
        state["scheduler"] = scheduler.state_dict()
    if parts.is_main:
        save_rotating(parts.run_dir / CHECKPOINTS, state)
    parts.accelerator.wait_for_everyone()


# ----------------------------------------------------------------- resuming
def restore_state(parts: Components, state: dict[str, Any]) -> RunState:
    """The checkpoint's run state, with the plugins and the trainable weights restored, the log
    cut back to the checkpoint and the plugin context sharing the restored counters."""
    from retain.models.adapters import load_trainable_state_dict

    try:
        run = RunState.from_state(state)
    except StateFormatError as exc:
        raise ResumeError(
            f"the checkpoint in {parts.run_dir / CHECKPOINTS} cannot be read as a run state "
            f"({exc}); start afresh with --overwrite (or --fresh)"
        ) from None
    # plugins first: an adapter method sets which of its parameters train (and restores the
    # frozen ones) before the trainable parameters are matched by name
    restore_plugins(parts.plugins, state)
    from retain.models.sharding import is_sharded
    from retain.train.fsdp import load_full_trainable_state

    model = parts.inner_model()
    if is_sharded(model):
        load_full_trainable_state(model, state["trainable"])
    else:
        load_trainable_state_dict(model, state["trainable"])
    run.share_with(parts.ctx)
    parts.log.truncate(run.log_offset)
    return run


def rank_rng_states(accelerator: Accelerator) -> list[dict[str, Any]]:
    """Every rank's generator states (dropout draws differ per rank), in rank order."""
    mine = rng_state()
    if accelerator.num_processes == 1:
        return [mine]
    from accelerate.utils import gather_object

    return list(gather_object([mine]))


def restore_rng(accelerator: Accelerator, state: dict[str, Any]) -> None:
    """This rank's generator states (rank 0's when the run had fewer processes before)."""
    states = state["rng"]
    rank = accelerator.process_index
    set_rng_state(states[rank] if rank < len(states) else states[0])


def restore_plugins(plugins: list[Plugin], state: dict[str, Any]) -> None:
    """Every plugin's state, before the task it was saved in restarts: a plugin's
    `on_task_start` sees it and keeps it when it resumes that very task (mid-task)."""
    for i, p in enumerate(plugins):
        p.load_state_dict(state["plugins"].get(f"{i}:{p.name}", {}))


def check_fingerprint(parts: Components, state: dict[str, Any]) -> None:
    """Refuse a checkpoint made on other encoded data than the run has now."""
    stored = state.get("fingerprint")
    where = parts.run_dir
    if not isinstance(stored, dict):
        raise ResumeError(
            f"the checkpoint in {where / CHECKPOINTS} has no data fingerprint (written by an "
            "older retain), so it cannot be checked against the data; start afresh with "
            "--overwrite (or --fresh)"
        )
    current = parts.data_fingerprint()
    diffs = fingerprint_differences(stored, current)
    if stored.get("version") != current["version"]:
        diffs = [f"the fingerprint version ({stored.get('version')} → {current['version']})"]
    if diffs:
        raise ResumeError(
            f"cannot resume {where}: since its checkpoint was written, {'; '.join(diffs)}, so old "
            "and new scores would mix in one matrix; restore the data, start afresh with "
            "--overwrite (or --fresh), or choose another name=..."
        )


def load_resume_state(parts: Components) -> tuple[RunState, dict[str, Any]] | None:
    """The restored run state and the checkpoint it came from (its optimizer and generators
    continue a task saved mid-way), or None for a fresh start.

    Says which checkpoint it resumes from and why a newer one was skipped; rewrites
    `scores.csv` from the checkpoint's matrix (a deleted one comes back).
    """
    found = load_newest(parts.run_dir / CHECKPOINTS)
    if found is None:
        return None
    state = found.state
    check_fingerprint(parts, state)
    if parts.is_main:
        for note in found.skipped:
            print(f"checkpoint {note}; falling back to the previous one, {found.path}")
        found.set_damaged_aside()
    run = restore_state(parts, state)
    pos = run.position
    if parts.is_main:
        print(f"resuming {parts.run_dir} from task {pos.task + 1} step {pos.step} ({pos.phase})")
    if pos.phase == "done":  # mid-task: train_task restores it after on_task_start
        restore_rng(parts.accelerator, state)
    if parts.is_main:
        run.matrix.to_csv(parts.run_dir / "scores.csv")
    write_fingerprint(parts)
    return run, state
