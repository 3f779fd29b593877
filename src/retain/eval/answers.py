"""Answer normalisation and the per-example scores of generated text."""

from __future__ import annotations

import re
import string
from collections import Counter

from retain.data.task import Metric

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def normalize(text: str) -> str:
    """SQuAD-style: lower-case, drop punctuation and articles, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in string.punctuation)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize(prediction) == normalize(reference))


def contains_match(prediction: str, reference: str) -> float:
    ref = normalize(reference)
    return float(bool(ref) and ref in normalize(prediction))


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize(prediction).split(), normalize(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def canonical_number(text: str) -> str | None:
    """'1,000' -> '1000', '2.50' -> '2.5', '-3.0' -> '-3'; None if not a number."""
    try:
        value = float(text.replace(",", "").rstrip("."))
    except ValueError:
        return None
    if value == int(value):
        return str(int(value))
    return repr(value)


def final_answer(text: str) -> str | None:
    """The final number of a math answer: after `####`, else the last `\\boxed{}`, else the last
    number in the text."""
    if "####" in text:
        tail = text.split("####")[-1]
        found = _NUMBER.findall(tail)
        return canonical_number(found[0]) if found else None
    boxed = _BOXED.findall(text)
    if boxed:
        found = _NUMBER.findall(boxed[-1])
        return canonical_number(found[-1]) if found else None
    found = _NUMBER.findall(text)
    return canonical_number(found[-1]) if found else None


def math_exact(prediction: str, reference: str) -> float:
    ref = final_answer(reference)
    return float(ref is not None and final_answer(prediction) == ref)


def score_text(metric: Metric, prediction: str, reference: str) -> float:
    """Per-example score in [0, 1] for generated answers."""
    if metric == "exact_match":
        return exact_match(prediction, reference)
    if metric == "contains":
        return contains_match(prediction, reference)
    if metric == "token_f1":
        return token_f1(prediction, reference)
    if metric == "math_exact":
        return math_exact(prediction, reference)
    raise ValueError(f"metric {metric!r} scores options by log-likelihood, not generated text")
