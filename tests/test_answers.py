"""Final-answer extraction for math tasks and cutting generated text at stop strings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retain.data.records import from_gsm8k
from retain.data.task import MATH_STOP
from retain.eval.answers import canonical_number, cut_at_stop, final_answer, math_exact

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def test_first_final_answer_wins_over_a_rambled_second_question() -> None:
    text = "9 * 2 = 18\n#### 18\nQuestion: Tom has 3 apples...\nAnswer: 3 + 4 = 7\n#### 7"
    assert final_answer(text) == "18"


def test_number_after_hashes_with_commas_and_dollars() -> None:
    assert final_answer("so 3 + 4 = 7\n#### 1,200") == "1200"
    assert final_answer("#### $1,234.50") == "1234.5"
    assert final_answer("####18.00") == "18"


def test_boxed_first_and_nested_braces() -> None:
    assert final_answer("the result is \\boxed{2.50}") == "2.5"
    assert final_answer("\\boxed{3} then later \\boxed{4}") == "3"
    assert final_answer("so \\boxed{\\frac{1}{2}} is it") == "0.5"
    assert final_answer("\\boxed{\\dfrac{3}{4}}") == "0.75"
    assert final_answer("\\boxed{18 \\text{ dollars}}") == "18"
    assert final_answer("an unclosed \\boxed{12 and 5") == "5"  # no crash: falls back


def test_the_answer_is() -> None:
    assert final_answer("The answer is 42. Then 7 more questions: 1, 2, 3") == "42"
    assert final_answer("So the final answer is: $15.") == "15"


def test_last_number_with_units_percent_and_commas() -> None:
    assert final_answer("5 apples then 12") == "12"
    assert final_answer("She makes 18 dollars") == "18"
    assert final_answer("It costs $1,234.50 in total") == "1234.5"
    assert final_answer("that is 18.00") == "18"
    assert final_answer("a rise of 25%") == "25"
    assert final_answer("he lost -9 dollars") == "-9"
    assert final_answer("pages 10-12") == "12"  # a range's dash is not a minus sign
    assert final_answer("no number here") is None


def test_canonical_number() -> None:
    assert canonical_number("1,000") == "1000"
    assert canonical_number("2.50") == "2.5"
    assert canonical_number("-3.0") == "-3"
    assert canonical_number("$7") == "7"
    assert canonical_number("abc") is None


def test_math_exact() -> None:
    assert math_exact("... 72 clips", "Natalia sold ... #### 72") == 1.0
    assert math_exact("73", "#### 72") == 0.0
    assert math_exact("#### 1080\n#### 5", "so #### 1,080") == 1.0


def test_cut_at_stop_takes_the_earliest_stop() -> None:
    assert cut_at_stop("a\n#### 5\nQuestion: b\n\n\nc", ("\n\n\n", "Question:")) == "a\n#### 5\n"
    assert cut_at_stop("nothing to cut", ("Question:",)) == "nothing to cut"
    assert cut_at_stop("x", ()) == "x"


def test_math_stop_never_cuts_a_gold_rationale() -> None:
    """The default stop strings of math tasks occur in no GSM8K reference solution."""
    files = [DATA / "gsm8k" / n for n in ("train.jsonl", "test.jsonl")]
    if not all(f.is_file() for f in files):
        pytest.skip(f"GSM8K data not found under {DATA}")
    for path in files:
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        for ex in from_gsm8k(records, str(path)):
            assert cut_at_stop(ex.answer, MATH_STOP) == ex.answer
            assert final_answer(ex.answer) is not None
