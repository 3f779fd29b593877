"""Loading the stream a run names, with its validation split and per-task caps.

`data.stream` is a registered name (`registry.STREAMS`, data under the data directory) or a YAML
stream file (`stream_file`, data next to the file). `load_stream` builds the tasks, then carves a
validation split out of train (unless the task has its own) and applies the caps, all with
seeds that depend only on `data.subsample_seed` and the task name, so every method in a
comparison sees the same data.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from retain.config_base import ConfigError
from retain.config_sections import DATA_DIR_ENV, DataConfig
from retain.data.registry import (
    BUILTIN,
    BUILTIN_TEST,
    BUILTIN_TRAIN,
    STREAMS,
    StreamDef,
    describe_streams,
)
from retain.data.stream_file import load_stream_file, stream_from_spec
from retain.data.task import Task, TaskStream
from retain.data.task_loader import Base, build_task, check_task_data, emit_warnings, load_task
from retain.data.task_spec import DataWarning, Format, TaskSpec

T = TypeVar("T")


def resolve_data_dir(data_dir: str | Path) -> Path:
    """The data folder: absolute, or relative to the working directory; it must exist.

    The error names the absolute path looked at, so a run started from another folder shows
    at once why `../shared/data` was not found.
    """
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        env = os.environ.get(DATA_DIR_ENV)
        origin = f" (from {DATA_DIR_ENV})" if env is not None and env == str(data_dir) else ""
        relative = "" if path.is_absolute() else f", relative to the working directory {Path.cwd()}"
        raise ConfigError(
            f"data directory '{data_dir}'{origin} not found (looked at {path.absolute()}"
            f"{relative}); pass --data-dir, data.data_dir=... or set {DATA_DIR_ENV}"
        )
    return path


def seeded_subset(items: Sequence[T], n: int | None, key: str) -> list[T]:
    """`n` items chosen by a generator seeded with `key`, kept in their original order.

    String seeds are hashed with SHA-512 by `random`, so the choice is the same in every
    process and Python version (unlike `hash()`).
    """
    if n is None or n >= len(items):
        return list(items)
    chosen = sorted(random.Random(key).sample(range(len(items)), n))
    return [items[i] for i in chosen]


def _smaller(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def cap_task(task: Task, config: DataConfig) -> Task:
    """Carve `valid` out of train (seeded, disjoint), then cap train and test.

    Validation comes first, so it never depends on the train cap, and it takes at most half of
    train so a small task keeps data to learn from. A task with its own validation split keeps
    it, capped at `valid_per_task` like a carved one (0: no validation split). Train and test
    caps are the smaller of the run's (`data.max_*_per_task`) and the task's own budget.
    """
    seed = config.subsample_seed
    train, valid = list(task.train), list(task.valid)
    if valid:
        valid = seeded_subset(valid, config.valid_per_task, f"{seed}:{task.name}:valid")
    elif config.valid_per_task:
        n_valid = min(config.valid_per_task, len(train) // 2)
        held = set(seeded_subset(range(len(train)), n_valid, f"{seed}:{task.name}:valid"))
        valid = [ex for i, ex in enumerate(train) if i in held]
        train = [ex for i, ex in enumerate(train) if i not in held]
    max_train = _smaller(config.max_train_per_task, task.budget.max_train)
    max_test = _smaller(config.max_test_per_task, task.budget.max_test)
    train = seeded_subset(train, max_train, f"{seed}:{task.name}:train")
    test = seeded_subset(task.test, max_test, f"{seed}:{task.name}:test")
    capped = dataclasses.replace(task, train=train, test=test, valid=valid)
    check_task_data(capped)
    return capped


def _builtin(config: DataConfig) -> TaskStream:
    """The generated stream; it is made with room for `valid` so train keeps its size.

    Decision: generated from `data.subsample_seed`, not the run seed, like every other
    stream's subsample, so that the seeds of a bench train and test on the same examples and
    can be compared pairwise."""
    from retain.data.builtin import builtin_stream

    n_train = config.max_train_per_task or BUILTIN_TRAIN
    n_test = config.max_test_per_task or BUILTIN_TEST
    stream = builtin_stream(config.subsample_seed, n_train + config.valid_per_task, n_test)
    caps = config.model_copy(update={"max_train_per_task": n_train, "max_test_per_task": n_test})
    return TaskStream(stream.name, [cap_task(t, caps) for t in stream.tasks])


def load_stream(config: DataConfig) -> TaskStream:
    """The stream `config.stream` names, subsampled per config, cut to its first `num_tasks`
    tasks, generation capped at `max_new_tokens` (both for runs that must fit a budget)."""
    stream = _load_named_stream(config)
    if config.num_tasks and config.num_tasks > len(stream.tasks):
        raise ConfigError(
            f"data.num_tasks={config.num_tasks}, but stream {config.stream!r} has only "
            f"{len(stream.tasks)} tasks; lower data.num_tasks or leave it unset (all tasks)"
        )
    tasks = stream.tasks[: config.num_tasks] if config.num_tasks else stream.tasks
    if config.max_new_tokens is not None:
        for task in tasks:
            task.max_new_tokens = min(task.max_new_tokens, config.max_new_tokens)
    return TaskStream(stream.name, tasks)


def _registered(name: str, data_dir: Path) -> TaskStream:
    tasks = [load_task(spec, Base(data_dir)) for spec in STREAMS[name].tasks]
    emit_warnings(tasks)
    return TaskStream(name, tasks)


def _load_named_stream(config: DataConfig) -> TaskStream:
    """The stream `config.stream` names (registered name or YAML file), subsampled per config.

    Generation and subsampling use `config.subsample_seed`, never the run seed, so that runs
    with different seeds share their data.
    """
    name = config.stream
    if name == BUILTIN:
        return _builtin(config)
    if name in STREAMS:
        stream = _registered(name, resolve_data_dir(config.data_dir))
    elif name.endswith((".yaml", ".yml")):
        stream = load_stream_file(name)
    else:
        raise ConfigError(
            f"unknown stream {name!r}; known: {', '.join(STREAMS)}, or a path to a .yaml "
            "stream file"
        )
    return TaskStream(stream.name, [cap_task(t, config) for t in stream.tasks])


__all__ = [
    "BUILTIN",
    "STREAMS",
    "DataWarning",
    "Format",
    "StreamDef",
    "TaskSpec",
    "build_task",
    "cap_task",
    "check_task_data",
    "describe_streams",
    "load_stream",
    "load_stream_file",
    "resolve_data_dir",
    "seeded_subset",
    "stream_from_spec",
]
