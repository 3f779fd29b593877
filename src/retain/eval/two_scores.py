"""The two scores of a task with a label set, and which of them is primary.

Published continual-learning codes score a labelled task by greedy generation and a string
match; retain used to score it by log-likelihood over its options. The two measure different
things (can the model still answer in the task's format, versus is the right label still the
likeliest valid one), so every evaluated cell of such a task gets both: per example the
generation score (`generate`, the task's string metric), the option score (`loglik`, the
accuracy `eval.loglik_norm` names) and whether the generated answer is one of the example's
options once normalised (`valid`). The matrix uses the primary one: `eval.score` if set, else
the task's `scoring` (its stream's protocol). A task without options has the generation score
only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Literal

from retain.data.normalize import generation_metric, normalizer
from retain.data.task import Example, Task
from retain.eval.answers import score_text

Score = Literal["generate", "loglik"]
SCORES: tuple[Score, ...] = ("generate", "loglik")
VALID = "valid"
"""Per-example extra column: 1 when the generated answer normalises to one of its options."""

EXACT_METRICS = frozenset({"exact_match", "olora_exact", "raw_exact"})
"""Metrics under which no answer longer than the longest label (plus `LABEL_MARGIN`) can match,
so generation can stop there."""

LABEL_MARGIN = 3
"""Tokens allowed past the longest option (which already ends in EOS) for trailing spaces or
punctuation that the metric's normalisation removes."""

TOP_INVALID = 3
"""How many of the most frequent invalid answers a cell reports."""


def has_options(examples: Sequence[Example]) -> bool:
    """Whether every example lists its options (a label set, or per-example choices)."""
    return bool(examples) and all(ex.options for ex in examples)


def primary_score(task: Task, override: str | None, options: bool = True) -> Score:
    """Which score the matrix uses for `task`: `eval.score` if given, else the task's scoring;
    always `generate` for a task without options."""
    if not options:
        return "generate"
    if override is not None:
        if override not in SCORES:
            raise ValueError(f"eval.score must be one of {', '.join(SCORES)}, not {override!r}")
        return override  # type: ignore[return-value]
    return "loglik" if task.scoring == "loglik" else "generate"


def decode_budget(task: Task, option_ids: Sequence[Sequence[Sequence[int]]] | None) -> int:
    """New tokens to generate: from the longest option (plus `LABEL_MARGIN`) when options are
    known and the metric is an exact match, else the task's `max_new_tokens`."""
    if option_ids and generation_metric(task) in EXACT_METRICS:
        return max(len(o) for opts in option_ids for o in opts) + LABEL_MARGIN
    return task.max_new_tokens


def is_valid(metric: str, text: str, options: Sequence[str]) -> bool:
    """Whether `text` is one of `options` under the metric's normalisation."""
    norm = normalizer(metric)
    return norm(text) in {norm(o) for o in options}


def generation_scores(
    task: Task, examples: Sequence[Example], texts: Sequence[str]
) -> tuple[list[float], list[float] | None]:
    """Per example: the generation score, and validity (None without options)."""
    metric = generation_metric(task)
    scores = [
        score_text(metric, text, ex.answer, source=ex.source_text)
        for text, ex in zip(texts, examples, strict=True)
    ]
    if not has_options(examples):
        return scores, None
    valid = [
        float(is_valid(metric, t, ex.options or ())) for t, ex in zip(texts, examples, strict=True)
    ]
    return scores, valid


def invalid_answers(
    texts: Sequence[str], valid: Sequence[float], top: int = TOP_INVALID
) -> list[tuple[str, int]]:
    """The most frequent invalid answers of a cell, with their counts (most frequent first)."""
    counts = Counter(t.strip() for t, v in zip(texts, valid, strict=True) if not v)
    return counts.most_common(top)
