"""Answer normalisation and the per-example scores of generated text."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

from retain.data.normalize import choice_letter, normalize, olora_normalize, raw_normalize
from retain.data.task import Metric

_NUMBER = re.compile(r"(?<![\w.])(-?)\$?(\d{1,3}(?:,\d{3})+(?!\d)|\d+)(\.\d+)?")
"""A number as written in answers: `-3`, `1,234.50`, `$18`; `%` or units after it are ignored.
A dash right after a word or digit (`10-12`) is a range or a minus, not a sign."""
_ANSWER_IS = re.compile(r"the (?:final )?answer is\b", re.I)
_FRAC = re.compile(r"\A\s*(-?)\\d?frac\{([^{}]*)\}\{([^{}]*)\}\s*\Z")


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize(prediction) == normalize(reference))


def olora_exact(prediction: str, reference: str) -> float:
    """O-LoRA's exact match: equal after `olora_normalize` ("Sci/Tech." matches "scitech")."""
    return float(olora_normalize(prediction) == olora_normalize(reference))


def raw_exact(prediction: str, reference: str) -> float:
    """TRACE's exact match: case and punctuation count ("world" does not match "World")."""
    return float(raw_normalize(prediction) == raw_normalize(reference))


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
    """'1,000' -> '1000', '2.50' -> '2.5', '-3.0' -> '-3', '$7' -> '7'; None if not a number."""
    try:
        value = Decimal(text.strip().replace(",", "").replace("$", "").rstrip("."))
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def _numbers(text: str) -> list[str]:
    """Every number of `text` in order, canonicalised."""
    found = (canonical_number(sign + whole + frac) for sign, whole, frac in _NUMBER.findall(text))
    return [n for n in found if n is not None]


def _braced(text: str, open_at: int) -> str | None:
    """The content of the brace group opening at `open_at`, nested braces allowed."""
    depth = 0
    for k in range(open_at, len(text)):
        if text[k] == "{":
            depth += 1
        elif text[k] == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : k]
    return None


def _boxed_number(content: str) -> str | None:
    frac = _FRAC.match(content)
    if frac:
        num, den = (canonical_number(x) for x in frac.group(2, 3))
        if num is not None and den is not None and Decimal(den) != 0:
            return canonical_number(frac.group(1) + str(Decimal(num) / Decimal(den)))
    found = _numbers(content)
    return found[0] if found else None


def final_answer(text: str) -> str | None:
    """The FIRST final answer of a math solution, canonicalised.

    Tried in order: the number after the first `####`; the first complete `\\boxed{...}`
    (`\\frac{a}{b}` inside is a/b); the number after the first "the answer is"; else the last
    number of the text. Taking the first marker means that a model rambling on into a new
    question after its answer is scored on its answer; generated text is also cut at the task's
    stop strings before this is called.
    """
    if "####" in text:
        found = _numbers(text.split("####", 1)[1])
        return found[0] if found else None
    at = text.find("\\boxed{")
    while at != -1:
        content = _braced(text, at + len("\\boxed"))
        if content is not None:
            return _boxed_number(content)
        at = text.find("\\boxed{", at + 1)
    said = _ANSWER_IS.search(text)
    if said:
        found = _numbers(text[said.end() :])
        if found:
            return found[0]
    found = _numbers(text)
    return found[-1] if found else None


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """`text` up to the earliest occurrence of any stop string (kept whole if none occurs)."""
    cuts = [i for i in (text.find(s) for s in stop if s) if i != -1]
    return text[: min(cuts)] if cuts else text


def math_exact(prediction: str, reference: str) -> float:
    ref = final_answer(reference)
    return float(ref is not None and final_answer(prediction) == ref)


def choice_letter_match(prediction: str, reference: str) -> float:
    """1 when both begin with the same choice letter: the explanation after it is not scored."""
    ref = choice_letter(reference)
    return float(ref is not None and choice_letter(prediction) == ref)


def score_text(
    metric: Metric, prediction: str, reference: str, source: str | None = None
) -> float:
    """Per-example score in [0, 1] for generated answers.

    `source` is the text the answer rewrites (`Example.source_text`); only `sari` reads it.
    """
    from retain.eval import text_metrics as tm

    if metric == "exact_match":
        return exact_match(prediction, reference)
    if metric == "olora_exact":
        return olora_exact(prediction, reference)
    if metric == "raw_exact":
        return raw_exact(prediction, reference)
    if metric == "contains":
        return contains_match(prediction, reference)
    if metric == "token_f1":
        return token_f1(prediction, reference)
    if metric == "math_exact":
        return math_exact(prediction, reference)
    if metric == "choice_letter":
        return choice_letter_match(prediction, reference)
    if metric == "rouge_l":
        return tm.rouge_l(prediction, reference)
    if metric == "edit_similarity":
        return tm.edit_similarity(prediction, reference)
    if metric == "bleu":
        return tm.bleu(prediction, reference)
    if metric == "sari":
        if source is None:
            raise ValueError(
                "metric sari needs the source sentence: pass source=example.source_text"
            )
        return tm.sari(source, prediction, reference)
    raise ValueError(f"metric {metric!r} scores options by log-likelihood, not generated text")
