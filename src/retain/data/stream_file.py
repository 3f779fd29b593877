"""Streams defined in YAML files: a user's own tasks without writing Python.

```yaml
name: my-stream            # optional; default: the file name
root: data                 # optional; folder of relative paths, itself relative to this file
tasks:
  - {name: qa, train: qa/train.jsonl, test: qa/test.jsonl, format: prompt_answer,
     metric: token_f1, max_new_tokens: 16, stop: ["\\n"]}
```

Relative paths resolve against the stream file's own folder (or its `root`), never against the
working directory, so a stream file and its data can move together. The file is read with
YAML 1.2 booleans: unquoted `yes`/`no`/`on`/`off` stay text (labels often are such words);
`true`/`false` are refused where text is expected, with the value shown.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from retain.config_base import ConfigError
from retain.data.task import TaskStream
from retain.data.task_loader import Base, emit_warnings, load_task
from retain.data.task_spec import DataWarning, TaskSpec
from retain.yaml_io import Yaml12BoolLoader, load_yaml, read_text

STREAM_KEYS = ("name", "description", "root", "tasks")
StreamFileLoader = Yaml12BoolLoader
"""The config loader (bounded aliases, exponent floats) with YAML 1.2 booleans: only
true/false."""


def read_stream_yaml(text: str, source: str = "") -> Any:
    """A stream file's content as data (see `StreamFileLoader`)."""
    return load_yaml(text, source, StreamFileLoader)


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


def parse_stream_spec(spec: Any) -> tuple[dict[str, Any], list[TaskSpec]]:
    """The top-level keys and validated task specs of a stream spec (nothing is read)."""
    if isinstance(spec, list):
        spec = {"tasks": spec}
    if not isinstance(spec, dict):
        raise ConfigError("stream spec: expected a mapping with a 'tasks' list")
    unknown = set(spec) - set(STREAM_KEYS)
    if unknown:
        raise ConfigError(
            f"stream spec: unknown keys {sorted(unknown)}; allowed: {', '.join(STREAM_KEYS)}"
        )
    tasks = spec.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise ConfigError("stream spec: 'tasks' must be a non-empty list of tasks")
    specs = [_task_spec(t, i) for i, t in enumerate(tasks)]
    names = [s.name for s in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"stream spec: task names must be unique; repeated: {repeated}")
    return spec, specs


def stream_from_spec(
    spec: dict[str, Any] | list[Any],
    base_dir: str | Path | Base,
    name: str = "custom",
) -> TaskStream:
    """A stream defined as data: `{name: ..., tasks: [{name, train, test, format, ...}, ...]}`.

    A bare list of tasks is accepted too. Relative paths resolve against `base_dir` (and a
    `root` key under it). No caps are applied here (see `streams.load_stream`). Warnings about
    the data are emitted as `DataWarning`s and kept in `TaskStream.warnings`.
    """
    top, specs = parse_stream_spec(spec)
    base = base_dir if isinstance(base_dir, Base) else Base(Path(base_dir), "the folder")
    root = top.get("root")
    if root is not None:
        if not isinstance(root, str):
            raise ConfigError(f"stream spec: root must be a folder path, got {root!r}")
        folder = base.folder / Path(os.path.expandvars(root)).expanduser()
        base = Base(folder, f"the stream's root ({root!r} under {base.folder})")
    tasks = [load_task(s, base) for s in specs]
    emit_warnings(tasks)
    return TaskStream(str(top.get("name", name)), tasks)


def load_stream_file(path: str | Path) -> TaskStream:
    """The stream a YAML file defines; its relative paths resolve against its own folder."""
    file = Path(path).expanduser()
    if file.is_dir():
        raise ConfigError(f"stream file '{path}' is a directory; give the .yaml file that "
                          "defines the stream (a tasks: list)")
    if not file.is_file():
        raise ConfigError(
            f"stream file '{path}' not found (looked at {file.absolute()}; a relative path is "
            f"taken from the working directory {Path.cwd()})"
        )
    try:
        spec = read_stream_yaml(read_text(file, "stream file"), str(path))
    except yaml.YAMLError as exc:
        raise ConfigError(f"stream file {exc}") from None
    folder = file.absolute().parent
    try:
        return stream_from_spec(spec, Base(folder, "the stream file's folder"), name=file.stem)
    except ConfigError as exc:
        raise ConfigError(f"stream file {path}: {exc}") from None


__all__ = [
    "DataWarning",
    "StreamFileLoader",
    "load_stream_file",
    "parse_stream_spec",
    "read_stream_yaml",
    "stream_from_spec",
]
