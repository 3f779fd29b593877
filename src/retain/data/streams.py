"""The stream registry: named benchmark streams, YAML-defined streams and subsampling.

A stream is data, not code: each task is a `TaskSpec` (files, record format, scoring), and a
named stream is an ordered tuple of them. Users define their own streams in the same form in a
YAML file (`stream_from_spec`). `load_stream` builds the tasks, then carves a validation split
out of train and applies the per-task caps, all with seeds that depend only on
`data.subsample_seed` and the task name, so every method in a comparison sees the same data.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from retain.config import ConfigError, DataConfig
from retain.data import records as rec
from retain.data.readers import (
    HF_PREFIX,
    DataFileNotFoundError,
    DataFormatError,
    Records,
    read_records,
    with_gz_fallback,
)
from retain.data.task import MATH_STOP, Example, Metric, Scoring, Task, TaskStream

T = TypeVar("T")

Format = Literal["prompt_answer", "sentence_label", "alpaca", "multiple_choice", "gsm8k"]

BUILTIN = "builtin"
BUILTIN_TRAIN = 200
BUILTIN_TEST = 50


class TaskSpec(BaseModel):
    """One task of a stream, as written in a registry entry or a YAML stream file.

    Paths are relative to the data directory unless absolute; `hf:<id>[:<config>]:<split>`
    reads a Hub dataset. Unset `scoring`/`metric`/`max_new_tokens`/`stop` follow from the
    format: examples with options are scored by log-likelihood (accuracy), others by greedy
    generation (exact match; `math_exact`, 256 new tokens and `MATH_STOP` for gsm8k).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    train: str
    test: str
    format: Format
    labels: str | list[str] | None = Field(
        None, description="labels.json path or an inline list (prompt_answer, sentence_label)"
    )
    instruction: str | None = Field(None, description="task instruction (sentence_label)")
    scoring: Scoring | None = None
    metric: Metric | None = None
    max_new_tokens: int | None = Field(None, gt=0)
    drop_answers: tuple[str, ...] = Field(
        (), description="records with this answer/label are dropped (e.g. '-': no gold label)"
    )
    stop: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None,
        description="generation stops at the first of these strings; None: MATH_STOP for "
        "math_exact tasks, none otherwise; [] turns the default off",
    )


@dataclasses.dataclass(frozen=True)
class StreamDef:
    """A registered stream: its tasks in training order (empty for the generated `builtin`)."""

    description: str
    tasks: tuple[TaskSpec, ...] = ()


_TREELORA = "treelora_long_sequence_500"
_OLORA_FOLDERS = {
    "agnews": "agnews",
    "amazon": "amazon",
    "dbpedia": "dbpedia",
    "yahoo": "yahoo",
    "yelp": "yelp",
    "mnli": "MNLI",
    "qqp": "QQP",
    "rte": "RTE",
    "sst2": "SST-2",
    "wic": "WiC",
    "cb": "CB",
    "copa": "COPA",
    "boolq": "BoolQA",
    "multirc": "MultiRC",
    "imdb": "IMDB",
}
_OLORA_ORDERS = {
    "olora-standard-1": "dbpedia amazon yahoo agnews",
    "olora-standard-2": "dbpedia amazon agnews yahoo",
    "olora-standard-3": "yahoo amazon agnews dbpedia",
    "olora-long-4": "mnli cb wic copa qqp boolq rte imdb yelp amazon sst2 dbpedia agnews "
    "multirc yahoo",
    "olora-long-5": "multirc boolq wic mnli cb copa qqp rte imdb sst2 dbpedia agnews yelp "
    "amazon yahoo",
    "olora-long-6": "yelp amazon mnli cb copa qqp rte imdb sst2 dbpedia agnews yahoo multirc "
    "boolq wic",
}


def _olora_task(name: str) -> TaskSpec:
    """An O-LoRA task from its TRACE-format copy (500 train / 100 test, every split present).

    GLUE marks items without a gold label with '-' (two MNLI test items); they are dropped.
    """
    folder = f"{_TREELORA}/{_OLORA_FOLDERS[name]}"
    return TaskSpec(
        name=name,
        train=f"{folder}/train.json",
        test=f"{folder}/test.json",
        format="prompt_answer",
        labels=f"{folder}/labels.json",
        drop_answers=("-",),
    )


_OLORA_CL = "olora_cl_benchmark/CL_Benchmark"
_ADAPTERS = "llm_adapters_eval"

_REASONING_5 = (
    TaskSpec(
        name="agnews",
        train=f"{_OLORA_CL}/TC/agnews/train.json.gz",
        test=f"{_OLORA_CL}/TC/agnews/test.json.gz",
        format="sentence_label",
        labels=f"{_OLORA_CL}/TC/agnews/labels.json",
        instruction=rec.OLORA_INSTRUCTIONS["agnews"],
    ),
    TaskSpec(
        name="boolq",
        train=f"{_OLORA_CL}/BoolQA/BoolQA/train.json.gz",
        test=f"{_OLORA_CL}/BoolQA/BoolQA/test.json.gz",
        format="sentence_label",
        labels=f"{_OLORA_CL}/BoolQA/BoolQA/labels.json",
        instruction=rec.OLORA_INSTRUCTIONS["boolq"],
    ),
    TaskSpec(
        name="openbookqa",
        train=f"{_ADAPTERS}/openbookqa/train.json.gz",
        test=f"{_ADAPTERS}/openbookqa/test.json",
        format="alpaca",
    ),
    TaskSpec(
        name="arc-challenge",
        train=f"{_ADAPTERS}/ARC-Challenge/train.json.gz",
        test=f"{_ADAPTERS}/ARC-Challenge/test.json.gz",
        format="alpaca",
    ),
    TaskSpec(
        name="gsm8k",
        train="gsm8k/train.jsonl",
        test="gsm8k/test.jsonl",
        format="gsm8k",
        scoring="generate",
        metric="math_exact",
        max_new_tokens=256,
    ),
)

STREAMS: dict[str, StreamDef] = {
    BUILTIN: StreamDef("tasks generated by our own code from the seed; no data files"),
    **{
        name: StreamDef(
            f"O-LoRA {len(order.split())}-task order ({_TREELORA})",
            tuple(_olora_task(t) for t in order.split()),
        )
        for name, order in _OLORA_ORDERS.items()
    },
    "reasoning-5": StreamDef(
        "agnews, boolq (with passage), openbookqa, arc-challenge, gsm8k: an offline stand-in "
        "for MSSR's 11-task stream",
        _REASONING_5,
    ),
}
"""Every named stream; `data.stream` is one of these names or a path to a YAML stream file."""


def resolve_data_dir(data_dir: str | Path) -> Path:
    """The data folder: absolute, or relative to the working directory; it must exist."""
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise ConfigError(
            f"data directory '{data_dir}' not found; pass --data-dir or data.data_dir=..."
        )
    return path


def _resolve(path: str, data_dir: str | Path) -> str | Path:
    """A task file: `hf:` ids as given, absolute paths as given, others under `data_dir`."""
    if path.startswith(HF_PREFIX):
        return path
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = resolve_data_dir(data_dir) / p
    return with_gz_fallback(p)


def _read_labels(path: str | Path) -> list[str]:
    try:
        labels = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataFileNotFoundError(f"labels file not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path} line {exc.lineno}: invalid JSON: {exc.msg}") from exc
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise DataFormatError(f'{path}: expected a JSON list of label strings, e.g. ["yes", "no"]')
    for i, label in enumerate(labels):
        if not label.strip():
            raise DataFormatError(f"{path}: label {i} is empty; every label must hold text")
    return labels


def _labels(spec: TaskSpec, data_dir: str | Path) -> list[str] | None:
    if spec.labels is None:
        if spec.format == "sentence_label":
            raise ConfigError(f"task {spec.name!r}: format sentence_label needs labels")
        return None
    if spec.format not in ("prompt_answer", "sentence_label"):
        raise ConfigError(
            f"task {spec.name!r}: labels apply to prompt_answer and sentence_label, "
            f"not {spec.format}"
        )
    if isinstance(spec.labels, list):
        return list(spec.labels)
    return _read_labels(_resolve(spec.labels, data_dir))


def _examples(
    spec: TaskSpec, path: str, data_dir: str | Path, labels: list[str] | None
) -> tuple[list[Example], str]:
    source = _resolve(path, data_dir)
    records = read_records(source)
    if spec.drop_answers:
        drop = set(spec.drop_answers)
        kept = [i for i, r in enumerate(records) if r.get("answer", r.get("label")) not in drop]
        lines = records.lines
        records = Records(
            (records[i] for i in kept), [lines[i] for i in kept] if lines is not None else None
        )
    name = str(source)
    if spec.format == "prompt_answer":
        return rec.from_prompt_answer(records, name, labels), name
    if spec.format == "sentence_label":
        if spec.instruction is None:
            raise ConfigError(f"task {spec.name!r}: format sentence_label needs an instruction")
        assert labels is not None
        return rec.from_sentence_label(records, name, labels, spec.instruction), name
    if spec.format == "alpaca":
        return rec.from_alpaca(records, name), name
    if spec.format == "multiple_choice":
        return rec.from_multiple_choice(records, name), name
    return rec.from_gsm8k(records, name), name


def build_task(spec: TaskSpec, data_dir: str | Path) -> Task:
    """Read and convert both splits of one task; scoring defaults follow from the data."""
    labels = _labels(spec, data_dir)
    train, train_src = _examples(spec, spec.train, data_dir, labels)
    test, test_src = _examples(spec, spec.test, data_dir, labels)
    gsm8k = spec.format == "gsm8k"
    has_options = all(ex.options for ex in [*train, *test])
    scoring = spec.scoring or ("loglik" if has_options and not gsm8k else "generate")
    metric = spec.metric or (
        "accuracy" if scoring == "loglik" else "math_exact" if gsm8k else "exact_match"
    )
    max_new_tokens = spec.max_new_tokens or (256 if gsm8k else 32)
    if spec.stop is not None:
        stop = tuple(spec.stop)
    else:
        stop = MATH_STOP if metric == "math_exact" else ()
    try:
        task = Task(
            name=spec.name,
            train=train,
            test=test,
            scoring=scoring,
            metric=metric,
            max_new_tokens=max_new_tokens,
            source=f"{train_src} | {test_src}",
            stop=stop,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    check_task_data(task, test_src)
    return task


def check_task_data(task: Task, test_source: str = "") -> None:
    """A task without test examples cannot be scored: refuse it at load time, by name."""
    if not task.test:
        where = f" in {test_source}" if test_source else ""
        raise ConfigError(
            f"task {task.name!r}: no test examples{where} (empty file, all records dropped by "
            "drop_answers, or capped to nothing); give the task a non-empty test split"
        )


def stream_from_spec(
    spec: dict[str, Any] | list[Any], data_dir: str | Path, name: str = "custom"
) -> TaskStream:
    """A stream defined as data: `{name: ..., tasks: [{name, train, test, format, ...}, ...]}`.

    A bare list of tasks is accepted too. No caps are applied here (see `load_stream`).
    """
    if isinstance(spec, list):
        spec = {"tasks": spec}
    if not isinstance(spec, dict):
        raise ConfigError("stream spec: expected a mapping with a 'tasks' list")
    unknown = set(spec) - {"name", "tasks"}
    if unknown:
        raise ConfigError(f"stream spec: unknown keys {sorted(unknown)}; allowed: name, tasks")
    tasks = spec.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise ConfigError("stream spec: 'tasks' must be a non-empty list of tasks")
    specs = [_task_spec(t, i) for i, t in enumerate(tasks)]
    names = [s.name for s in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"stream spec: task names must be unique; repeated: {repeated}")
    return TaskStream(str(spec.get("name", name)), [build_task(s, data_dir) for s in specs])


def _task_spec(data: Any, index: int) -> TaskSpec:
    try:
        return TaskSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e["loc"]) or "<task>"
            problem = f"{where}: {e['msg']}"
            if e["type"] == "extra_forbidden":
                problem += f"; allowed: {', '.join(TaskSpec.model_fields)}"
            problems.append(problem)
        raise ConfigError(f"stream spec tasks[{index}]: " + "; ".join(problems)) from None


def seeded_subset(items: Sequence[T], n: int | None, key: str) -> list[T]:
    """`n` items chosen by a generator seeded with `key`, kept in their original order.

    String seeds are hashed with SHA-512 by `random`, so the choice is the same in every
    process and Python version (unlike `hash()`).
    """
    if n is None or n >= len(items):
        return list(items)
    chosen = sorted(random.Random(key).sample(range(len(items)), n))
    return [items[i] for i in chosen]


def cap_task(task: Task, config: DataConfig) -> Task:
    """Carve `valid` out of train (seeded, disjoint), then cap train and test.

    Validation comes first, so it never depends on the train cap, and it takes at most half of
    train so a small task keeps data to learn from. A task that already has a validation split
    keeps it.
    """
    seed = config.subsample_seed
    train, valid = list(task.train), list(task.valid)
    if config.valid_per_task and not valid:
        n_valid = min(config.valid_per_task, len(train) // 2)
        held = set(seeded_subset(range(len(train)), n_valid, f"{seed}:{task.name}:valid"))
        valid = [ex for i, ex in enumerate(train) if i in held]
        train = [ex for i, ex in enumerate(train) if i not in held]
    train = seeded_subset(train, config.max_train_per_task, f"{seed}:{task.name}:train")
    test = seeded_subset(task.test, config.max_test_per_task, f"{seed}:{task.name}:test")
    capped = dataclasses.replace(task, train=train, test=test, valid=valid)
    check_task_data(capped)
    return capped


def _builtin(config: DataConfig, seed: int) -> TaskStream:
    """The generated stream; it is made with room for `valid` so train keeps its size."""
    from retain.data.builtin import builtin_stream

    n_train = config.max_train_per_task or BUILTIN_TRAIN
    n_test = config.max_test_per_task or BUILTIN_TEST
    stream = builtin_stream(seed, n_train + config.valid_per_task, n_test)
    caps = config.model_copy(update={"max_train_per_task": n_train, "max_test_per_task": n_test})
    return TaskStream(stream.name, [cap_task(t, caps) for t in stream.tasks])


def load_stream(config: DataConfig, seed: int) -> TaskStream:
    """The stream `config.stream` names, subsampled per config, cut to its first `num_tasks`
    tasks, generation capped at `max_new_tokens` (both for runs that must fit a budget)."""
    stream = _load_named_stream(config, seed)
    tasks = stream.tasks[: config.num_tasks] if config.num_tasks else stream.tasks
    if config.max_new_tokens is not None:
        for task in tasks:
            task.max_new_tokens = min(task.max_new_tokens, config.max_new_tokens)
    return TaskStream(stream.name, tasks)


def _load_named_stream(config: DataConfig, seed: int) -> TaskStream:
    """The stream `config.stream` names (registered name or YAML file), subsampled per config.

    `seed` is the run seed; only the generated `builtin` stream uses it. Subsampling uses
    `config.subsample_seed` so that runs with different seeds can share data.
    """
    name = config.stream
    if name == BUILTIN:
        return _builtin(config, seed)
    if name in STREAMS:
        data_dir = resolve_data_dir(config.data_dir)
        stream = TaskStream(name, [build_task(s, data_dir) for s in STREAMS[name].tasks])
    elif name.endswith((".yaml", ".yml")):
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"stream file '{name}' not found")
        try:
            spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"stream file {name} is not valid YAML: {exc}") from exc
        stream = stream_from_spec(spec, config.data_dir, name=path.stem)
    else:
        raise ConfigError(
            f"unknown stream {name!r}; known: {', '.join(STREAMS)}, or a path to a .yaml "
            "stream file"
        )
    return TaskStream(stream.name, [cap_task(t, config) for t in stream.tasks])
