"""Open-ended metrics: each against its library's own values or a published example."""

from __future__ import annotations

import pytest
from rapidfuzz import fuzz
from rouge_score.rouge_scorer import RougeScorer
from sacrebleu.metrics import BLEU

from retain.data.normalize import choice_letter
from retain.data.task import TEXT_METRICS, Example, Task
from retain.eval.answers import choice_letter_match, score_text
from retain.eval.text_metrics import bleu, edit_similarity, rouge_l, sari

SOURCE = "About 95 species are currently accepted."
REFS = [
    "About 95 species are currently known.",
    "About 95 species are now accepted.",
    "95 species are now accepted.",
]

PAIRS = [
    ("the cat sat on the mat", "the cat sat on the mat"),
    ("the cat on mat", "the cat sat on the mat"),
    ("a dog barked at night", "the cat sat on the mat"),
    ("The quick brown dog jumps on the log.", "The quick brown fox jumps over the lazy dog"),
    ("", "something"),
]


# --- ROUGE-L ------------------------------------------------------------------------------


@pytest.mark.parametrize(("prediction", "reference"), PAIRS)
def test_rouge_l_is_rouge_score_f_measure(prediction: str, reference: str) -> None:
    expected = RougeScorer(["rougeL"]).score(reference, prediction)["rougeL"].fmeasure
    assert rouge_l(prediction, reference) == pytest.approx(expected)
    assert score_text("rouge_l", prediction, reference) == pytest.approx(expected)


def test_rouge_l_by_hand() -> None:
    # LCS of "the cat on mat" and "the cat sat on the mat" is 4 tokens: P = 1, R = 4/6
    assert rouge_l("the cat on mat", "the cat sat on the mat") == pytest.approx(0.8)
    assert rouge_l("Same Words", "same words") == 1.0  # the tokenizer lower-cases
    assert rouge_l("", "anything") == 0.0


# --- edit similarity ----------------------------------------------------------------------


def test_edit_similarity_matches_rapidfuzz_published_example() -> None:
    # rapidfuzz README: fuzz.ratio("this is a test", "this is a test!") == 96.55...
    assert edit_similarity("this is a test", "this is a test!") == pytest.approx(
        0.9655172413793103
    )
    assert round(100 * edit_similarity("this is a test", "this is a test!")) == 97  # fuzzywuzzy


@pytest.mark.parametrize(("prediction", "reference"), PAIRS)
def test_edit_similarity_is_fuzz_ratio(prediction: str, reference: str) -> None:
    expected = fuzz.ratio(prediction, reference) / 100
    assert score_text("edit_similarity", prediction, reference) == pytest.approx(expected)


def test_edit_similarity_ignores_whitespace_width() -> None:
    assert edit_similarity("return  x +  1 ", "return x + 1") == 1.0
    assert edit_similarity("", "") == 1.0


# --- BLEU ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("prediction", "reference"), PAIRS)
def test_bleu_is_sacrebleu_sentence_bleu(prediction: str, reference: str) -> None:
    expected = BLEU(effective_order=True).sentence_score(prediction, [reference]).score / 100
    assert bleu(prediction, reference) == pytest.approx(min(1.0, expected))
    assert 0.0 <= score_text("bleu", prediction, reference) <= 1.0


def test_bleu_bounds() -> None:
    assert bleu("the cat sat on the mat", "the cat sat on the mat") == 1.0
    assert bleu("zebra", "the cat sat on the mat") == 0.0


# --- SARI ---------------------------------------------------------------------------------


def test_sari_reproduces_the_published_example() -> None:
    # EASSE README and the Hugging Face `evaluate` SARI card: 26.953601953601954
    assert 100 * sari(SOURCE, "About 95 you now get in.", REFS) == pytest.approx(
        26.953601953601954, abs=1e-9
    )


def test_sari_by_hand_with_one_reference() -> None:
    # keep: every order keeps "a b" n-grams the reference keeps (F1 1; 0/0 counts as 1);
    # delete: "c" n-grams deleted, and not in the reference (precision 1);
    # add: "d" is added, the reference adds "e" instead: F1 0 for orders 1-3, 1 for 4 (0/0).
    assert sari("a b c", "a b d", "a b e") == pytest.approx((1 + 1 + 0.25) / 3)


def test_sari_ranks_the_reference_first() -> None:
    good = sari(SOURCE, REFS[1], REFS)
    copy = sari(SOURCE, SOURCE, REFS)
    bad = sari(SOURCE, "About 95 you now get in.", REFS)
    assert good > copy > bad
    assert sari("a b c", "x y", "x y") == pytest.approx(1.0)


def test_sari_through_score_text_needs_the_source() -> None:
    assert score_text("sari", REFS[1], REFS[1], source=SOURCE) == pytest.approx(
        sari(SOURCE, REFS[1], REFS[1])
    )
    with pytest.raises(ValueError, match="sari needs the source sentence"):
        score_text("sari", REFS[1], REFS[1])


# --- QA and choice letters ------------------------------------------------------------------


def test_token_f1_and_contains() -> None:
    assert score_text("token_f1", "the red house", "a red house") == 1.0  # articles dropped
    assert score_text("token_f1", "red barn", "red house") == pytest.approx(0.5)
    assert score_text("contains", "It is Paris, I think.", "paris") == 1.0
    assert score_text("contains", "Lyon", "Paris") == 0.0


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("B", "B"),
        ("B. because it is larger", "B"),
        (" (C) the third one", "C"),
        ("D: none of them", "D"),
        ("B)", "B"),
        ("Because B is larger", None),
        ("b) lower case", None),
        ("", None),
    ],
)
def test_choice_letter(text: str, letter: str | None) -> None:
    assert choice_letter(text) == letter


def test_choice_letter_match_scores_the_letter_only() -> None:
    assert choice_letter_match("B. it is 40", "B, because 40 is the largest.") == 1.0
    assert choice_letter_match("C, because 40 is the largest.", "B, because 40 is larger") == 0.0
    assert score_text("choice_letter", "Because B", "B") == 0.0


def test_every_text_metric_scores_in_unit_interval() -> None:
    for metric in TEXT_METRICS:
        for prediction, reference in PAIRS:
            value = score_text(metric, prediction, reference, source=reference)  # type: ignore[arg-type]
            assert 0.0 <= value <= 1.0, (metric, prediction, reference)


def test_tasks_refuse_metrics_that_cannot_score_them() -> None:
    ex = [Example("q", "a")]
    with pytest.raises(ValueError, match="generated answers are scored by one of"):
        Task("t", ex, ex, scoring="generate", metric="accuracy")
    with pytest.raises(ValueError, match=r"test\[0\]: metric sari needs the source"):
        Task("t", ex, ex, scoring="generate", metric="sari")
    with_source = [Example("Simplify: long words\nSimple:", "short", original="long words")]
    assert Task("t", ex, with_source, scoring="generate", metric="sari").test == with_source
