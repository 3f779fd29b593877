"""How a task's answers are normalised: the comparison behind each exact-match metric, the
choice letter an answer opens with, and the checks a task's labels must pass at load time.

Data checks labels with these when a task is loaded and evaluation scores generated text with
them (`eval/answers.py`), so they sit in `data/`, below `eval/` in the layers
(docs/architecture.md). A change here can change a score: `eval/row0_cache.py` hashes it.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence

from retain.data.task import Metric, Task

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    """SQuAD-style: lower-case, drop punctuation and articles, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in string.punctuation)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def olora_normalize(text: str) -> str:
    """O-LoRA's answer normalisation: lower-case, punctuation dropped, whitespace collapsed
    and stripped (articles are kept, unlike SQuAD's `normalize`)."""
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return " ".join(text.split())


def raw_normalize(text: str) -> str:
    """TRACE's raw comparison: the text as generated, only surrounding whitespace stripped."""
    return text.strip()


NORMALIZERS = {"olora_exact": olora_normalize, "raw_exact": raw_normalize}
"""The normalisation behind each exact-match metric; every other metric uses `normalize`."""


def normalizer(metric: str) -> Callable[[str], str]:
    """The function that decides whether a generated answer is one of a task's labels."""
    return NORMALIZERS.get(metric, normalize)


_CHOICE_LETTER = re.compile(r"\A\s*[(\[]?([A-Z])(?![A-Za-z])")
"""A choice letter opening an answer: `B`, `B.`, `(B) because ...`, `B: the second`.
Lower-case letters do not count (`a` is an article), nor does a capital that starts a word."""


def choice_letter(text: str) -> str | None:
    """The choice letter an answer begins with, or None."""
    match = _CHOICE_LETTER.match(text)
    return match.group(1) if match else None


def generation_metric(task: Task) -> Metric:
    """The string metric of a generated answer: the task's own when it generates, else exact
    match (SQuAD normalisation)."""
    return task.metric if task.scoring == "generate" else "exact_match"


def check_label_collisions(task: str, labels: Sequence[str], metric: str) -> None:
    """Refuse a label set where two labels normalise to the same string: a generated answer
    could not tell them apart. Raises ValueError naming the task and both labels."""
    norm = normalizer(metric)
    seen: dict[str, str] = {}
    for label in labels:
        key = norm(label)
        if key in seen:
            raise ValueError(
                f"task {task!r}: labels {seen[key]!r} and {label!r} both normalise to {key!r} "
                f"under {metric}; a generated answer cannot tell them apart"
            )
        seen[key] = label
