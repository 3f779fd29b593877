"""Multiple-choice records in their three shapes (plain, MMLU CSV rows, ARC's official JSON),
as lettered prompts for the task streams or as (question, choices, answer) for cloze scoring.

Like every converter in `records.py`, each fails on the first bad record with a
`DataFormatError` naming the file, the record index and the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from retain.data.records import LETTERS, record_error, str_field
from retain.data.task import Example


def mc_prompt(question: str, choices: Sequence[str]) -> str:
    """`question`, one `A. choice` line per choice, then `Answer:`."""
    lines = [question.rstrip()]
    lines += [f"{LETTERS[k]}. {c}" for k, c in enumerate(choices)]
    return "\n".join(lines) + "\nAnswer:"


def from_multiple_choice(records: Sequence[dict[str, Any]], source: str) -> list[Example]:
    """Multiple choice, answered with a letter; three record shapes are understood.

    - `{question, choices, answer}`: choices a list (or Hub-style `{text: [...], label: [...]}`),
      answer an index, the choice text or a letter;
    - MMLU CSV rows `{question, choice0..choiceN, answer}`, answer a 0-based index or a letter;
    - ARC's official `{question: {stem, choices: [{text, label}]}, answerKey}`.
    """
    out = []
    for question, choices, index in multiple_choice_items(records, source):
        letters = tuple(LETTERS[: len(choices)])
        out.append(Example(mc_prompt(question, choices), letters[index], letters))
    return out


def multiple_choice_items(
    records: Sequence[dict[str, Any]], source: str
) -> list[tuple[str, list[str], int]]:
    """(question, choice texts, index of the right one) of each record, in the three shapes
    `from_multiple_choice` reads; for prompts of one's own (e.g. cloze scoring)."""
    items = []
    for i, rec in enumerate(records):
        if isinstance(rec.get("question"), dict):
            items.append(_arc_record(records, source, i))
        elif "choice0" in rec:
            items.append(_mmlu_record(records, source, i))
        else:
            items.append(_choices_record(records, source, i))
    return items


_MC_EXPECTED = "{question, choices, answer}"


def _choice_texts(
    records: Sequence[dict[str, Any]], source: str, i: int, field: str, value: Any
) -> list[str]:
    if not isinstance(value, list | tuple) or len(value) < 2 or len(value) > len(LETTERS):
        raise record_error(
            source, records, i, field, f"is {value!r}", "a list of 2 or more choices"
        )
    texts = []
    for c in value:
        if isinstance(c, bool) or not isinstance(c, str | int | float):
            raise record_error(source, records, i, field, f"holds {c!r}", "choices as text")
        texts.append(str(c))
    return texts


def _answer_index(
    records: Sequence[dict[str, Any]],
    source: str,
    i: int,
    field: str,
    choices: Sequence[str],
    by_text: bool,
) -> int:
    """The 0-based index of the right choice from an index, a letter or (if `by_text`) its text.

    Text is tried before letters and digits, so a choice list like ["1", "2"] is not misread;
    CSV rows never match by text because there a "1" is always an index.
    """
    rec = records[i]
    if field not in rec:
        raise record_error(source, records, i, field, "missing", _MC_EXPECTED)
    value = rec[field]
    n = len(choices)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < n:
        return value
    if isinstance(value, str):
        text = value.strip()
        if by_text and text in choices:
            return list(choices).index(text)
        if len(text) == 1 and text in LETTERS[:n]:
            return LETTERS.index(text)
        if text.isdigit() and int(text) < n:
            return int(text)
    raise record_error(
        source,
        records,
        i,
        field,
        f"is {value!r}",
        f"a 0-based index below {n}, a letter {LETTERS[0]}-{LETTERS[n - 1]}"
        + (" or the text of a choice" if by_text else ""),
    )


def _choices_record(
    records: Sequence[dict[str, Any]], source: str, i: int
) -> tuple[str, list[str], int]:
    rec = records[i]
    question = str_field(records, source, i, "question", _MC_EXPECTED)
    if "choices" not in rec:
        raise record_error(
            source,
            records,
            i,
            "choices",
            "missing",
            f"{_MC_EXPECTED}, MMLU {{question, choice0..choice3, answer}} or ARC "
            "{question: {stem, choices}, answerKey}",
        )
    raw = rec["choices"]
    if isinstance(raw, dict):
        if "text" not in raw:
            expected = "{text: [...], label: [...]}"
            raise record_error(source, records, i, "choices", "has no 'text'", expected)
        choices = _choice_texts(records, source, i, "choices.text", raw["text"])
        labels = raw.get("label")
        key = rec.get("answerKey")
        if isinstance(labels, list) and isinstance(key, str) and key in labels:
            return question, choices, labels.index(key)
    else:
        choices = _choice_texts(records, source, i, "choices", raw)
    field = "answer" if "answer" in rec or "answerKey" not in rec else "answerKey"
    return question, choices, _answer_index(records, source, i, field, choices, by_text=True)


def _mmlu_record(
    records: Sequence[dict[str, Any]], source: str, i: int
) -> tuple[str, list[str], int]:
    rec = records[i]
    expected = "{question, choice0..choice3, answer}"
    question = str_field(records, source, i, "question", expected)
    n = 0
    while f"choice{n}" in rec:
        n += 1
    choices = [str_field(records, source, i, f"choice{k}", expected, True) for k in range(n)]
    if n < 2:
        raise record_error(source, records, i, "choice1", "missing", expected)
    return question, choices, _answer_index(records, source, i, "answer", choices, by_text=False)


def _arc_record(
    records: Sequence[dict[str, Any]], source: str, i: int
) -> tuple[str, list[str], int]:
    rec = records[i]
    expected = "ARC {question: {stem, choices: [{text, label}]}, answerKey}"
    q = rec["question"]
    stem = q.get("stem")
    if not isinstance(stem, str):
        raise record_error(source, records, i, "question.stem", f"is {stem!r}", expected)
    raw = q.get("choices")
    if not isinstance(raw, list) or not all(
        isinstance(c, dict) and isinstance(c.get("text"), str) and "label" in c for c in raw
    ):
        raise record_error(source, records, i, "question.choices", f"is {raw!r}", expected)
    choices = _choice_texts(records, source, i, "question.choices", [c["text"] for c in raw])
    labels = [str(c["label"]) for c in raw]
    key = rec.get("answerKey")
    if str(key) not in labels:
        raise record_error(source, records, i, "answerKey", f"is {key!r}", f"one of {labels}")
    return stem, choices, labels.index(str(key))
