"""Loading a `TaskSpec` into a `Task`: files, field mapping, passages, scoring defaults.

Relative paths resolve against a base folder the caller gives (the data directory for registered
streams, the stream file's own folder for YAML files); a missing file is reported with the
absolute path looked at and where it was taken from. What loads but misleads (a validation split
that overlaps test) is kept in `Task.data_warnings` and emitted as a `DataWarning`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import warnings
from pathlib import Path

from retain.config_base import ConfigError
from retain.data import records as rec
from retain.data.multiple_choice import from_multiple_choice
from retain.data.normalize import check_label_collisions, choice_letter, generation_metric
from retain.data.readers import (
    HF_PREFIX,
    DataFileNotFoundError,
    DataFormatError,
    Records,
    locate,
    read_records,
    with_gz_fallback,
)
from retain.data.task import MATH_STOP, Example, Metric, Scoring, Task
from retain.data.task_spec import DataWarning, TaskSpec


@dataclasses.dataclass(frozen=True)
class Base:
    """The folder relative paths resolve against, and how to say so in an error."""

    folder: Path
    label: str = "the data directory"


def resolve_path(path: str, base: Base, what: str) -> str | Path:
    """A task file: `hf:` ids as given; `~` and `$VARS` expanded; relative ones under `base`.

    A missing file is reported with the absolute path looked at and where it was taken from.
    """
    if path.startswith(HF_PREFIX):
        return path
    p = Path(os.path.expandvars(path)).expanduser()
    if not p.is_absolute():
        p = base.folder / p
    p = with_gz_fallback(p)
    if not p.exists():
        relative = "" if Path(path).is_absolute() else f", relative to {base.label} {base.folder}"
        raise DataFileNotFoundError(
            f"data file not found: {p.absolute()} ({what}: {path!r}{relative})"
        )
    return p


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


def _labels(spec: TaskSpec, base: Base) -> list[str] | None:
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
        labels, where = list(spec.labels), f"task {spec.name!r} labels"
    else:
        where = str(resolve_path(spec.labels, base, f"task {spec.name!r} labels"))
        labels = _read_labels(where)
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:  # two options with one text: a tie the model cannot break, a gold it cannot name
        raise DataFormatError(f"{where}: label {twice[0]!r} is listed twice; each label must "
                              "be a different text")
    return labels


def _mapped(records: Records, mapping: dict[str, str]) -> Records:
    """Records with each remapped key copied to the name its format reads."""
    if not mapping:
        return records
    return Records(
        ({**r, **{k: r[v] for k, v in mapping.items() if v in r}} for r in records),
        records.lines,
    )


def _convert(
    spec: TaskSpec, records: Records, name: str, labels: list[str] | None
) -> list[Example]:
    if spec.format == "prompt_answer":
        return rec.from_prompt_answer(records, name, labels)
    if spec.format == "sentence_label":
        if spec.instruction is None:
            raise ConfigError(f"task {spec.name!r}: format sentence_label needs an instruction")
        assert labels is not None
        return rec.from_sentence_label(records, name, labels, spec.instruction)
    if spec.format == "alpaca":
        return rec.from_alpaca(records, name)
    if spec.format == "multiple_choice":
        return from_multiple_choice(records, name)
    return rec.from_gsm8k(records, name)


def _with_passages(
    spec: TaskSpec, records: Records, name: str, examples: list[Example]
) -> list[Example]:
    """Declare each prompt's passage from `context_pattern`, its source from `source_field`."""
    pattern = re.compile(spec.context_pattern) if spec.context_pattern else None
    out = []
    for i, (r, ex) in enumerate(zip(records, examples, strict=True)):
        context, original = ex.context, None
        if pattern is not None:
            match = pattern.search(ex.prompt)
            if match is None:
                raise DataFormatError(
                    f"{locate(name, records, i)}: prompt does not match context_pattern "
                    f"{spec.context_pattern!r}"
                )
            group = "context" if "context" in pattern.groupindex else 1
            context = match.span(group)
        if spec.source_field is not None:
            value = r.get(spec.source_field)
            if not isinstance(value, str):
                problem = "missing" if value is None else f"is {type(value).__name__}, not text"
                raise DataFormatError(
                    f"{locate(name, records, i)}: field {spec.source_field!r} (source_field) "
                    f"{problem}"
                )
            original = value
            at = ex.prompt.find(value) if value and context is None else -1
            if at != -1:
                context = (at, at + len(value))
        out.append(dataclasses.replace(ex, context=context, original=original))
    return out


def _examples(
    spec: TaskSpec, split: str, path: str, base: Base, labels: list[str] | None
) -> tuple[list[Example], str | Path]:
    source = resolve_path(path, base, f"task {spec.name!r} {split}")
    records = _mapped(read_records(source), spec.field_mapping)
    if spec.drop_answers:
        drop = set(spec.drop_answers)
        kept = [i for i, r in enumerate(records) if r.get("answer", r.get("label")) not in drop]
        lines = records.lines
        records = Records(
            (records[i] for i in kept), [lines[i] for i in kept] if lines is not None else None
        )
    name = str(source)
    try:
        examples = _convert(spec, records, name, labels)
    except DataFormatError as exc:
        if not spec.field_mapping:
            raise
        mapping = ", ".join(f"{k} from {v!r}" for k, v in spec.field_mapping.items())
        raise DataFormatError(f"{exc} (task {spec.name!r} reads {mapping})") from None
    if spec.context_pattern or spec.source_field:
        examples = _with_passages(spec, records, name, examples)
    return examples, source


def overlap_warnings(
    task: str, valid: list[Example], test: list[Example], valid_src: object, test_src: object
) -> list[str]:
    """Plain words for a validation split that overlaps the test split.

    Some published continual-learning code selects checkpoints on a "dev" file that is a copy
    of test; selecting on it is selecting on test, so it is said loudly.
    """
    fix = "give a validation file disjoint from test, or none (then it is carved from train)"
    paths = isinstance(valid_src, Path) and isinstance(test_src, Path)
    if paths and valid_src.read_bytes() == test_src.read_bytes():  # type: ignore[union-attr]
        return [
            f"task {task!r}: validation file {valid_src} is byte-identical to test file "
            f"{test_src}: choosing checkpoints or settings on it is choosing them on test; " + fix
        ]
    test_prompts = {ex.prompt for ex in test}
    shared = sum(1 for ex in valid if ex.prompt in test_prompts)
    if not shared:
        return []
    return [
        f"task {task!r}: {shared} of {len(valid)} validation examples ({valid_src}) also appear "
        f"in test ({test_src}); " + fix
    ]


def train_test_warnings(
    task: str, train: list[Example], test: list[Example], train_src: object, test_src: object
) -> list[str]:
    """Plain words for a training split that is the test split (a copied path, a copied file):
    the test scores would then measure memorising, not learning."""
    fix = "give a training file disjoint from test"
    paths = isinstance(train_src, Path) and isinstance(test_src, Path)
    if paths and (train_src == test_src or train_src.read_bytes() == test_src.read_bytes()):  # type: ignore[union-attr]
        return [f"task {task!r}: training file {train_src} is byte-identical to test file "
                f"{test_src}: its test scores measure memorising, not learning; " + fix]
    if train and test and [ex.prompt for ex in train] == [ex.prompt for ex in test]:
        return [f"task {task!r}: the training examples ({train_src}) are the test examples "
                f"({test_src}); " + fix]
    return []


def _scoring_defaults(
    spec: TaskSpec, examples: list[Example]
) -> tuple[Scoring, Metric, int, tuple[str, ...]]:
    gsm8k = spec.format == "gsm8k"
    has_options = all(ex.options for ex in examples)
    scoring = spec.scoring or ("loglik" if has_options and not gsm8k else "generate")
    metric: Metric = spec.metric or (
        "accuracy" if scoring == "loglik" else "math_exact" if gsm8k else "exact_match"
    )
    max_new_tokens = spec.max_new_tokens or (256 if gsm8k else 32)
    if spec.stop is not None:
        stop = tuple(spec.stop)
    else:
        stop = MATH_STOP if metric == "math_exact" else ()
    return scoring, metric, max_new_tokens, stop


def _check_references(name: str, metric: Metric, splits: dict[str, list[Example]]) -> None:
    """Refuse, at load time, evaluated examples the metric cannot score."""
    for split, examples in splits.items():
        for i, ex in enumerate(examples):
            if metric == "sari" and ex.source_text is None:
                raise ConfigError(
                    f"task {name!r} {split}[{i}]: metric sari needs the sentence the answer "
                    "rewrites; name its record key with source_field, or mark it in the prompt "
                    "with context_pattern"
                )
            if metric == "choice_letter" and choice_letter(ex.answer) is None:
                raise ConfigError(
                    f"task {name!r} {split}[{i}]: metric choice_letter needs answers that begin "
                    f"with a capital choice letter (B, B. ..., (B) ...), got {ex.answer[:40]!r}"
                )


def load_task(spec: TaskSpec, base: Base) -> Task:
    """Read and convert every split of one task; what about its data misleads is kept in
    `task.data_warnings` (emitted by `build_task` and the stream loaders)."""
    labels = _labels(spec, base)
    train, train_src = _examples(spec, "train", spec.train, base, labels)
    if not train:
        raise ConfigError(
            f"task {spec.name!r}: no training examples in {train_src} (an empty file, or every "
            "record dropped by drop_answers); give the task a non-empty train split"
        )
    test, test_src = _examples(spec, "test", spec.test, base, labels)
    valid: list[Example] = []
    notes: list[str] = train_test_warnings(spec.name, train, test, train_src, test_src)
    if spec.valid is not None:
        valid, valid_src = _examples(spec, "valid", spec.valid, base, labels)
        notes += overlap_warnings(spec.name, valid, test, valid_src, test_src)
    scoring, metric, max_new_tokens, stop = _scoring_defaults(spec, [*train, *test, *valid])
    notes += [
        f"task {spec.name!r}: stop string {s!r} holds a backslash and a letter, not a control "
        'character; in YAML write it in double quotes ("\\n"), single quotes keep it literal'
        for s in stop
        if re.search(r"\\[ntr]", s)
    ]
    _check_references(spec.name, metric, {"test": test, "valid": valid})
    try:
        task = Task(
            name=spec.name,
            train=train,
            test=test,
            scoring=scoring,
            metric=metric,
            max_new_tokens=max_new_tokens,
            source=f"{train_src} | {test_src}",
            valid=valid,
            stop=stop,
            budget=spec.budget,
            data_warnings=tuple(notes),
        )
        if labels is not None:
            check_label_collisions(spec.name, labels, generation_metric(task))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    check_task_data(task, str(test_src))
    return task


def emit_warnings(tasks: list[Task]) -> None:
    """Each task's data warnings as a `DataWarning` (shown once per place by Python)."""
    for task in tasks:
        for note in task.data_warnings:
            warnings.warn(note, DataWarning, stacklevel=3)


def build_task(spec: TaskSpec, base: Base | str | Path) -> Task:
    """`load_task`, its data warnings emitted as `DataWarning`s."""
    task = load_task(spec, base if isinstance(base, Base) else Base(Path(base)))
    emit_warnings([task])
    return task


def check_task_data(task: Task, test_source: str = "") -> None:
    """A task without test examples cannot be scored: refuse it at load time, by name."""
    if not task.test:
        where = f" in {test_source}" if test_source else ""
        raise ConfigError(
            f"task {task.name!r}: no test examples{where} (empty file, all records dropped by "
            "drop_answers, or capped to nothing); give the task a non-empty test split"
        )
