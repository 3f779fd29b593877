"""Turn raw records of each known shape into `Example`s, checking every field on the way.

One function per shape. Each takes the records and the `source` they came from (a file path or
dataset id, used only in error messages) and fails on the first bad record with a
`DataFormatError` naming the file, the record index and the field.

Prompts end in `Answer:`; the answer is appended after a space by the tokeniser code
(`encoding.answer_text`), so an answer is stored without a leading space. Empty or
whitespace-only answers are rejected: exact match would score them 100 % against an empty
generation.

Each converter also declares the prompt's long passage (`Example.context`), the only part that
may be shortened to fit a token budget: the O-LoRA text (its longest labelled field, such as
`passage:`, when it has them, so that a MultiRC question after its paragraph is kept), and the
alpaca `input`.
Questions (multiple choice, GSM8K) declare none: they are never cut. Multiple-choice shapes
live in `multiple_choice.py`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from retain.data.readers import DataFormatError, locate
from retain.data.task import Example

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

OLORA_INSTRUCTIONS: dict[str, str] = {
    "agnews": "What is the topic of the following paragraph? Choose one from the option.",
    "dbpedia": "What is the topic of the following paragraph? Choose one from the option.",
    "yahoo": "What is the topic of the following paragraph? Choose one from the option.",
    "amazon": "What is the sentiment of the following paragraph? Choose one from the option.",
    "yelp": "What is the sentiment of the following paragraph? Choose one from the option.",
    "imdb": "What is the sentiment of the following paragraph? Choose one from the option.",
    "sst2": "What is the sentiment of the following paragraph? Choose one from the option.",
    "mnli": 'What is the logical relationship between the "sentence 1" and the "sentence 2"? '
    "Choose one from the option.",
    "rte": 'What is the logical relationship between the "sentence 1" and the "sentence 2"? '
    "Choose one from the option.",
    "cb": 'What is the logical relationship between the "sentence 1" and the "sentence 2"? '
    "Choose one from the option.",
    "qqp": 'Whether the "first sentence" and the "second sentence" have the same meaning? '
    "Choose one from the option.",
    "wic": "Given a word and two sentences, whether the word is used with the same sense in both "
    "sentence? Choose one from the option.",
    "boolq": "According to the following passage, is the question true or false? "
    "Choose one from the option.",
    "multirc": "According to the following passage and question, is the candidate answer true or "
    "false? Choose one from the option.",
}
"""The instruction of each O-LoRA task family, word for word as in the TRACE-format copies
(`treelora_long_sequence_500`), so that `{sentence, label}` data gets the same prompts."""

_ANSWER_FORMAT = re.compile(r"Answer format:\s*(\S+)\s*$")
_CALCULATOR = re.compile(r"<<[^<>]*>>")
_TRACE_TEMPLATE = re.compile(r"\A.+?\nOption: [^\n]*\n(?P<text>.*)Answer:\s*\Z", re.S)
"""`<instruction>\nOption: a, b \n<text>Answer:`, the prompt of the TRACE / O-LoRA copies."""
_FIELD_LABEL = re.compile(
    r"^(?:title|text|question|passage|paragraph|candidate answer|sentence [12]|first sentence|"
    r"second sentence|word): ",
    re.M | re.I,
)
"""A line that starts a labelled field of an O-LoRA text (`passage: `, `sentence 1: `, ...).
Only the template's own labels count: a review or an answer may hold lines like `Pros: `."""


def record_error(
    source: str, records: Sequence[Any], i: int, field: str, problem: str, expected: str
) -> DataFormatError:
    """`file line 7 (record 6): field 'answer' missing; expected {prompt, answer}`."""
    return DataFormatError(
        f"{locate(source, records, i)}: field {field!r} {problem}; expected {expected}"
    )


def str_field(
    records: Sequence[dict[str, Any]],
    source: str,
    i: int,
    field: str,
    expected: str,
    numbers: bool = False,
) -> str:
    """A text field; `numbers` also accepts ints and floats (CSV-like data, numeric answers)."""
    rec = records[i]
    if field not in rec:
        raise record_error(source, records, i, field, "missing", expected)
    value = rec[field]
    if isinstance(value, str):
        return value
    if numbers and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    kind = "text or a number" if numbers else "text"
    raise record_error(
        source, records, i, field, f"is {type(value).__name__}, not {kind}", expected
    )


def _answer_field(
    records: Sequence[dict[str, Any]], source: str, i: int, field: str, expected: str
) -> str:
    """An answer: text or a number, never empty or only whitespace."""
    value = str_field(records, source, i, field, expected, numbers=True)
    if not value.strip():
        raise record_error(source, records, i, field, "is empty", f"a non-empty answer; {expected}")
    return value


def _trimmed(text: str, start: int, end: int) -> tuple[int, int] | None:
    """[start, end) without surrounding whitespace; None if nothing is left."""
    piece = text[start:end]
    start += len(piece) - len(piece.lstrip())
    end -= len(piece) - len(piece.rstrip())
    return (start, end) if start < end else None


def passage_span(prompt: str, start: int, end: int) -> tuple[int, int] | None:
    """The passage inside the O-LoRA text `prompt[start:end]`.

    A text made of labelled fields (`question: ...\npassage: ...`) has its longest field's value
    as the passage (the first on ties), so that the other fields, such as the question and the
    candidate answer after a MultiRC paragraph, are never cut; any other text is a passage whole.
    """
    text = prompt[start:end]
    marks = list(_FIELD_LABEL.finditer(text))
    if not marks:
        return _trimmed(prompt, start, end)
    spans = [(start, start + marks[0].start())]
    ends = [m.start() for m in marks[1:]] + [len(text)]
    spans += [(start + m.end(), start + e) for m, e in zip(marks, ends, strict=True)]
    trimmed = [t for t in (_trimmed(prompt, a, b) for a, b in spans) if t is not None]
    return max(trimmed, key=lambda t: t[1] - t[0], default=None)


def trace_context(prompt: str) -> tuple[int, int] | None:
    """The passage of a TRACE-template prompt; None for any other prompt."""
    match = _TRACE_TEMPLATE.match(prompt)
    if match is None:
        return None
    return passage_span(prompt, match.start("text"), match.end("text"))


def from_prompt_answer(
    records: Sequence[dict[str, Any]], source: str, options: Sequence[str] | None = None
) -> list[Example]:
    """TRACE / TreeLoRA `{prompt, answer}`; with `options` (labels.json) for loglik scoring."""
    expected = "{prompt, answer}"
    opts = tuple(options) if options is not None else None
    out = []
    for i in range(len(records)):
        prompt = str_field(records, source, i, "prompt", expected)
        answer = _answer_field(records, source, i, "answer", expected)
        if opts is not None and answer not in opts:
            raise record_error(
                source, records, i, "answer", f"is {answer!r}", f"one of {list(opts)}"
            )
        out.append(Example(prompt, answer, opts, trace_context(prompt)))
    return out


def _option_header(instruction: str, labels: Sequence[str]) -> str:
    return f"{instruction}\nOption: {', '.join(labels)} \n"


def sentence_prompt(instruction: str, labels: Sequence[str], sentence: str) -> str:
    """The TRACE prompt built from O-LoRA parts: instruction, option list, text, `Answer:`."""
    body = sentence if sentence.endswith("\n") else sentence + "\n"
    return f"{_option_header(instruction, labels)}{body}Answer:"


def from_sentence_label(
    records: Sequence[dict[str, Any]],
    source: str,
    labels: Sequence[str],
    instruction: str,
) -> list[Example]:
    """O-LoRA `{sentence, label}`; the label may also be an index into `labels`."""
    expected = "{sentence, label}"
    opts = tuple(labels)
    out = []
    for i, rec in enumerate(records):
        sentence = str_field(records, source, i, "sentence", expected)
        if "label" not in rec:
            raise record_error(source, records, i, "label", "missing", expected)
        label = rec["label"]
        if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(opts):
            label = opts[label]
        if label not in opts:
            raise record_error(source, records, i, "label", f"is {label!r}", f"one of {list(opts)}")
        if not str(label).strip():
            raise record_error(
                source, records, i, "label", "is empty", f"a non-empty label; {expected}"
            )
        prompt = sentence_prompt(instruction, opts, sentence)
        start = len(_option_header(instruction, opts))
        context = passage_span(prompt, start, start + len(sentence))
        out.append(Example(prompt, str(label), opts, context))
    return out


def from_alpaca(
    records: Sequence[dict[str, Any]], source: str, options_from_answer_format: bool = True
) -> list[Example]:
    """`{instruction, input, output}`, and the LLM-Adapters variant with an `answer` field.

    Multiple-choice records there end their instruction with `Answer format: a/b/c`; those
    choices become the options and `answer` the target, so they are scored by log-likelihood.
    """
    expected = "{instruction, input, output} (optionally answer)"
    out = []
    for i, rec in enumerate(records):
        instruction = str_field(records, source, i, "instruction", expected)
        text = str_field(records, source, i, "input", expected) if "input" in rec else ""
        prompt = f"{instruction}\n{text}" if text.strip() else instruction
        prompt += "\nAnswer:"
        start = len(instruction) + 1
        context = _trimmed(prompt, start, start + len(text)) if text.strip() else None
        match = _ANSWER_FORMAT.search(instruction) if options_from_answer_format else None
        if match:
            options = tuple(c for c in match.group(1).split("/") if c)
            answer = _answer_field(records, source, i, "answer", expected)
            if answer not in options:
                raise record_error(
                    source, records, i, "answer", f"is {answer!r}", f"one of {list(options)}"
                )
            out.append(Example(prompt, answer, options, context))
        else:
            field = "answer" if "answer" in rec else "output"
            out.append(
                Example(prompt, _answer_field(records, source, i, field, expected), None, context)
            )
    return out


def gsm8k_answer(rationale: str) -> str:
    """The rationale without `<<48/2=24>>` calculator notes; it keeps its `#### N` ending."""
    return _CALCULATOR.sub("", rationale).strip()


def from_gsm8k(records: Sequence[dict[str, Any]], source: str) -> list[Example]:
    """GSM8K `{question, answer}`: the model learns the worked solution ending in `#### N`."""
    expected = "{question, answer} with the answer ending in '#### <number>'"
    out = []
    for i in range(len(records)):
        question = str_field(records, source, i, "question", expected)
        rationale = str_field(records, source, i, "answer", expected)
        _, sep, final = rationale.rpartition("####")
        if not sep or not final.strip():
            raise record_error(
                source, records, i, "answer", "has no '#### <number>' ending", expected
            )
        out.append(Example(f"Question: {question.strip()}\nAnswer:", gsm8k_answer(rationale)))
    return out


def from_text(records: Sequence[dict[str, Any]], source: str) -> list[str]:
    """General-corpus `{text}` records (plain-text files are read as such)."""
    return [str_field(records, source, i, "text", "{text}") for i in range(len(records))]
