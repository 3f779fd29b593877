"""Open-ended text metrics of the field, each a per-example score in [0, 1].

ROUGE-L, BLEU and edit similarity come from the libraries the published evaluations use, so
that our numbers can be set beside theirs: `rouge-score` (Google's ROUGE-1.5.5 port, as
Hugging Face `evaluate` wraps it), `sacrebleu` (sentence BLEU) and `rapidfuzz` (the
`fuzzywuzzy`-style ratio of CodeXGLUE and TRACE code completion). No maintained SARI package
exists on PyPI (EASSE is not published there, and `evaluate` fetches its metric scripts from the
Hub at run time), so `sari` follows Xu et al. (2016) here, with the conventions of EASSE and
`evaluate`; `tests/test_text_metrics.py` checks it against EASSE's published examples.

A task score is the mean of these per-example scores: mean sentence BLEU is not corpus BLEU,
while mean sentence SARI equals corpus SARI (it is linear in its three parts).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

SARI_MAX_ORDER = 4


@lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(["rougeL"], use_stemmer=False)


@lru_cache(maxsize=1)
def _bleu() -> Any:
    from sacrebleu.metrics import BLEU

    return BLEU(effective_order=True)


@lru_cache(maxsize=1)
def _tokenizer_13a() -> Any:
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return Tokenizer13a()


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (longest common subsequence), `rouge-score` defaults, no stemming.

    Its default tokeniser lower-cases and keeps ASCII letters and digits only: it is meant for
    English, as the summarisation benchmarks that report it are.
    """
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].fmeasure)


def edit_similarity(prediction: str, reference: str) -> float:
    """Indel similarity of the two strings (`fuzz.ratio` / 100), whitespace runs collapsed.

    Code-completion benchmarks report this "edit sim"; collapsing whitespace keeps a changed
    indentation width or a trailing blank from counting as an edit.
    """
    from rapidfuzz import fuzz

    return fuzz.ratio(" ".join(prediction.split()), " ".join(reference.split())) / 100.0


def bleu(prediction: str, reference: str) -> float:
    """Sentence BLEU with sacrebleu's defaults (13a tokens, exp smoothing, effective order)."""
    score = _bleu().sentence_score(prediction, [reference]).score / 100.0
    return min(1.0, max(0.0, score))


def sari_tokens(text: str) -> list[str]:
    """Lower-cased 13a tokens, the normalisation EASSE and `evaluate` apply before SARI."""
    return _tokenizer_13a()(text.lower()).split()


def _ngrams(tokens: Sequence[str], n: int) -> Counter[str]:
    return Counter(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _f1(precision: float, recall: float) -> float:
    total = precision + recall
    return 0.0 if total == 0 else 2 * precision * recall / total


def _mean_ratio(good: Counter[str], made: Counter[str]) -> float:
    """Mean over the n-grams of `made` of good/made counts; 1 when nothing was made (0/0)."""
    if not made:
        return 1.0
    return sum(good[g] / made[g] for g in made) / len(made)


def _sari_order(
    source: Counter[str], output: Counter[str], references: Sequence[Counter[str]]
) -> tuple[float, float, float]:
    """(keep F1, deletion precision, addition F1) for one n-gram order.

    Source and output counts are weighted by the number of references, so that an n-gram kept
    by some references only earns partial credit (Xu et al. 2016, section 4.1). Where a ratio has
    nothing to count (0/0) it is 1, so that an output equal to its reference scores 1.
    """
    k = len(references)
    refs: Counter[str] = Counter()
    for counts in references:
        refs.update(counts)
    src = Counter({g: c * k for g, c in source.items()})
    out = Counter({g: c * k for g, c in output.items()})

    kept = src & out
    kept_good = kept & refs
    keep_wanted = src & refs
    keep_recall = (
        sum(kept_good.values()) / sum(keep_wanted.values()) if keep_wanted else 1.0
    )
    keep = _f1(_mean_ratio(kept_good, kept), keep_recall)

    deleted = src - out
    deletion = _mean_ratio(deleted - refs, deleted)

    added = set(output) - set(source)
    add_wanted = set(refs) - set(source)
    add_good = added & add_wanted
    add_precision = len(add_good) / len(added) if added else 1.0
    add_recall = len(add_good) / len(add_wanted) if add_wanted else 1.0
    return keep, deletion, _f1(add_precision, add_recall)


def sari(source: str, prediction: str, references: str | Sequence[str]) -> float:
    """SARI of one rewrite of `source` against one or more reference rewrites, in [0, 1].

    The mean of keep F1, deletion precision and addition F1, each averaged over n-gram orders
    1 to 4, on lower-cased 13a tokens (EASSE's `sentence_sari` / 100).
    """
    refs = [references] if isinstance(references, str) else list(references)
    if not refs:
        raise ValueError("sari needs at least one reference")
    src, out = sari_tokens(source), sari_tokens(prediction)
    ref_tokens = [sari_tokens(r) for r in refs]
    parts = [
        _sari_order(_ngrams(src, n), _ngrams(out, n), [_ngrams(r, n) for r in ref_tokens])
        for n in range(1, SARI_MAX_ORDER + 1)
    ]
    keep, deletion, addition = (sum(p[i] for p in parts) / len(parts) for i in range(3))
    return (keep + deletion + addition) / 3
