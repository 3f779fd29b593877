"""Data of the general-ability suite: MMLU and ARC-Easy subsets, WikiText-2 paragraphs.

These measure what fine-tuning on a stream costs the model outside the stream, so they are
fixed, seeded subsets that every run and method shares. The tasks have no train split.

Decision: both multiple-choice sets are scored as cloze — `Question: ...\nAnswer:` followed by
each answer's text, per byte (lm-eval's `acc_norm` for ARC, the "cloze" MMLU of small-model
evaluations) — not by answer letters or `answer1..4` labels: models of ~100M parameters pick
letters at chance level, so a letter format could not show what training costs them.
"""

from __future__ import annotations

import re
from pathlib import Path

from retain.config_base import ConfigError
from retain.data.multiple_choice import multiple_choice_items
from retain.data.readers import (
    DataFileNotFoundError,
    DataFormatError,
    find_split,
    locate,
    read_records,
)
from retain.data.records import from_text
from retain.data.streams import resolve_data_dir, seeded_subset
from retain.data.task import Example, Task

MMLU_FIELDS = ("question", "choice0", "choice1", "choice2", "choice3", "answer")
"""MMLU CSV columns; the original headerless files are read with these names."""


def mmlu_subjects(data_dir: str | Path) -> list[str]:
    """The subjects with a `mmlu/test/<subject>_test.csv` file, sorted."""
    folder = resolve_data_dir(data_dir) / "mmlu" / "test"
    subjects = sorted(p.name.removesuffix("_test.csv") for p in folder.glob("*_test.csv"))
    if not subjects:
        raise DataFileNotFoundError(f"no MMLU test files (<subject>_test.csv) in {folder}")
    return subjects


def mmlu_subset(
    data_dir: str | Path,
    per_subject: int = 10,
    subjects: list[str] | None = None,
    seed: int = 0,
) -> Task:
    """A stratified MMLU test subset: `per_subject` seeded questions from each subject."""
    available = mmlu_subjects(data_dir)
    chosen = available if subjects is None else subjects
    unknown = [s for s in chosen if s not in available]
    if unknown:
        raise ConfigError(f"unknown MMLU subjects {unknown}; available: {', '.join(available)}")
    folder = resolve_data_dir(data_dir) / "mmlu" / "test"
    test: list[Example] = []
    for subject in chosen:
        path = folder / f"{subject}_test.csv"
        items = multiple_choice_items(read_records(path, fieldnames=MMLU_FIELDS), str(path))
        examples = [cloze(q, choices, index) for q, choices, index in items]
        test += seeded_subset(examples, per_subject, f"{seed}:mmlu:{subject}")
    return Task(name="mmlu", train=[], test=test, source=str(folder))


def cloze(question: str, choices: list[str], index: int) -> Example:
    """A multiple-choice question scored over its answers' texts (module docstring)."""
    return Example(f"Question: {question}\nAnswer:", choices[index], tuple(choices))


_ADAPTERS_MC = re.compile(
    r"^Please choose the correct answer to the question: (?P<question>.*?)\n\n"
    r"(?P<choices>Answer1: .*?)\n\nAnswer format: [a-z0-9/]+\s*$",
    re.S,
)
_ADAPTERS_CHOICE = re.compile(r"Answer(\d+): (.*?)(?= Answer\d+: |$)", re.S)


def _adapters_choice(records: list[dict], source: str, i: int) -> tuple[str, list[str], int]:
    """(question, choices, answer index) of an LLM-Adapters ARC record, whose instruction lists
    `Answer1: ... Answer2: ...` and whose `answer` is `answerN`."""
    rec = records[i]
    expected = "an instruction 'Please choose ... Answer1: ... Answer format: ...' and answerN"
    match = _ADAPTERS_MC.match(str(rec.get("instruction", "")))
    answer = re.fullmatch(r"answer(\d+)", str(rec.get("answer", "")).strip())
    if match is None or answer is None:
        raise DataFormatError(
            f"{locate(source, records, i)}: not an ARC choice record; expected {expected}"
        )
    found = _ADAPTERS_CHOICE.findall(match["choices"])
    numbers = [int(k) for k, _ in found]
    index = int(answer[1]) - 1
    if numbers != list(range(1, len(found) + 1)) or not 0 <= index < len(found):
        raise DataFormatError(
            f"{locate(source, records, i)}: choices {numbers} and answer "
            f"{rec.get('answer')!r} do not match; expected {expected}"
        )
    return match["question"].strip(), [text.strip() for _, text in found], index


def arc_easy_subset(data_dir: str | Path, n: int = 100, seed: int = 0) -> Task:
    """A seeded subset of the ARC-Easy test set, scored over its `answer1..N` options."""
    path = find_split(resolve_data_dir(data_dir) / "llm_adapters_eval" / "ARC-Easy", "test")
    records = read_records(path)
    examples = [cloze(*_adapters_choice(records, str(path), i)) for i in range(len(records))]
    test = seeded_subset(examples, n, f"{seed}:arc_easy")
    return Task(name="arc_easy", train=[], test=test, source=str(path))


def wikitext_paragraphs(data_dir: str | Path, n: int = 50) -> list[str]:
    """The first `n` body paragraphs of WikiText-2 raw test (headings `= ... =` skipped).

    The first ones in order, not a sample: perplexity stays comparable across runs, and GeRe
    replay text comes from other files, so the two never overlap.
    """
    path = resolve_data_dir(data_dir) / "general_text" / "wikitext2_raw" / "wiki.test.raw"
    paragraphs = []
    for text in from_text(read_records(path), str(path)):
        line = text.strip()
        if not line or (line.startswith("=") and line.endswith("=")):
            continue
        paragraphs.append(line)
        if len(paragraphs) >= n:
            break
    return paragraphs
