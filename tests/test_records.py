"""Record converters: each shape, and errors that name file, record and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retain.data.multiple_choice import from_multiple_choice
from retain.data.readers import DataFormatError, read_records
from retain.data.records import (
    OLORA_INSTRUCTIONS,
    from_alpaca,
    from_gsm8k,
    from_prompt_answer,
    from_sentence_label,
    from_text,
    sentence_prompt,
)
from retain.data.task import Example

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --- {prompt, answer} ---------------------------------------------------------------------


def test_prompt_answer() -> None:
    got = from_prompt_answer([{"prompt": "2+2=", "answer": "4"}], "f.json")
    assert got == [Example("2+2=", "4", None)]


def test_prompt_answer_with_options() -> None:
    got = from_prompt_answer([{"prompt": "p", "answer": "no"}], "f.json", options=["yes", "no"])
    assert got[0].options == ("yes", "no")


def test_prompt_answer_not_among_options() -> None:
    with pytest.raises(DataFormatError, match=r"f\.json record 0: field 'answer' is 'maybe'"):
        from_prompt_answer([{"prompt": "p", "answer": "maybe"}], "f.json", options=["yes", "no"])


def test_missing_field_names_file_line_record_field(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "x.jsonl", [{"prompt": "a", "answer": "b"}, {"prompt": "c"}])
    with pytest.raises(DataFormatError) as info:
        from_prompt_answer(read_records(path), str(path))
    assert str(info.value) == (
        f"{path} line 2 (record 1): field 'answer' missing; expected {{prompt, answer}}"
    )


def test_wrong_type_field() -> None:
    with pytest.raises(DataFormatError, match=r"record 0: field 'prompt' is list, not text"):
        from_prompt_answer([{"prompt": ["a"], "answer": "b"}], "f.json")


# --- {sentence, label} --------------------------------------------------------------------


def test_sentence_label_prompt() -> None:
    records = [{"sentence": "Text: great film", "label": "Good"}, {"sentence": "meh\n", "label": 1}]
    got = from_sentence_label(records, "f.json", ["Good", "Bad"], "What is the sentiment?")
    assert got[0].prompt == "What is the sentiment?\nOption: Good, Bad \nText: great film\nAnswer:"
    assert got[0].answer == "Good"
    assert got[0].options == ("Good", "Bad")
    assert got[1].prompt.endswith("\nmeh\nAnswer:")
    assert got[1].answer == "Bad"
    assert got[1].prompt == sentence_prompt("What is the sentiment?", ["Good", "Bad"], "meh")


def test_sentence_label_errors() -> None:
    with pytest.raises(DataFormatError, match=r"record 1: field 'label' is 'Meh'.*one of"):
        from_sentence_label(
            [{"sentence": "s", "label": "Good"}, {"sentence": "s", "label": "Meh"}],
            "f.json",
            ["Good", "Bad"],
            "i",
        )
    with pytest.raises(DataFormatError, match=r"record 0: field 'sentence' missing"):
        from_sentence_label([{"label": "Good"}], "f.json", ["Good", "Bad"], "i")


def test_sentence_prompt_matches_trace_copies() -> None:
    """O-LoRA records rebuilt with our prompt equal the TRACE-format copies of the same items."""
    trace_file = DATA / "treelora_long_sequence_500" / "BoolQA" / "train.json"
    olora_file = DATA / "olora_cl_benchmark/CL_Benchmark/BoolQA/BoolQA/train.json.gz"
    if not trace_file.is_file() or not olora_file.is_file():
        pytest.skip(f"shared benchmark data not found under {DATA}")
    trace = {r["prompt"] for r in read_records(trace_file)}
    labels = ["True", "False"]
    rebuilt = from_sentence_label(
        read_records(olora_file), str(olora_file), labels, OLORA_INSTRUCTIONS["boolq"]
    )
    matched = sum(ex.prompt in trace for ex in rebuilt)
    assert matched >= 400  # the TRACE copy is a 500-item sample of this train file


# --- alpaca -------------------------------------------------------------------------------

MC_INSTRUCTION = (
    "Please choose the correct answer to the question: Sky colour?\n\n"
    "Answer1: blue Answer2: green\n\nAnswer format: answer1/answer2"
)


def test_alpaca_multiple_choice() -> None:
    rec = {"instruction": MC_INSTRUCTION, "input": "", "output": "x", "answer": "answer1"}
    (ex,) = from_alpaca([rec], "f.json")
    assert ex.prompt == MC_INSTRUCTION + "\nAnswer:"
    assert ex.answer == "answer1"
    assert ex.options == ("answer1", "answer2")


def test_alpaca_open_answers() -> None:
    records = [
        {"instruction": "Add", "input": "2 and 3", "output": "5"},
        {"instruction": "Solve 2x=4", "input": "", "output": "x is 2", "answer": 2.0},
    ]
    got = from_alpaca(records, "f.json")
    assert got[0] == Example("Add\n2 and 3\nAnswer:", "5", None, context=(4, 11))
    assert got[1] == Example("Solve 2x=4\nAnswer:", "2.0", None)


def test_alpaca_without_answer_format_options() -> None:
    rec = {"instruction": MC_INSTRUCTION, "output": "the correct answer is answer1"}
    (ex,) = from_alpaca([rec], "f.json", options_from_answer_format=False)
    assert ex.options is None
    assert ex.answer == "the correct answer is answer1"


def test_alpaca_errors() -> None:
    rec = {"instruction": MC_INSTRUCTION, "input": "", "output": "x", "answer": "answer7"}
    with pytest.raises(DataFormatError, match=r"record 0: field 'answer' is 'answer7'"):
        from_alpaca([rec], "f.json")
    with pytest.raises(DataFormatError, match=r"record 0: field 'answer' missing"):
        from_alpaca([{"instruction": MC_INSTRUCTION, "output": "x"}], "f.json")
    with pytest.raises(DataFormatError, match=r"record 0: field 'instruction' missing"):
        from_alpaca([{"input": "", "output": "x"}], "f.json")


# --- multiple choice ----------------------------------------------------------------------


def test_multiple_choice_answer_forms() -> None:
    choices = ["red", "blue", "green", "pink"]
    records = [
        {"question": "Sky?", "choices": choices, "answer": 1},
        {"question": "Sky?", "choices": choices, "answer": "blue"},
        {"question": "Sky?", "choices": choices, "answer": "B"},
    ]
    got = from_multiple_choice(records, "f.json")
    assert got[0].prompt == "Sky?\nA. red\nB. blue\nC. green\nD. pink\nAnswer:"
    assert all(ex.answer == "B" and ex.options == ("A", "B", "C", "D") for ex in got)


def test_multiple_choice_text_before_digits() -> None:
    """A choice list of numbers: a string answer is the choice text, an int is an index."""
    records = [
        {"question": "1+1?", "choices": ["1", "2", "3"], "answer": "2"},
        {"question": "1+1?", "choices": ["1", "2", "3"], "answer": 1},
    ]
    assert [ex.answer for ex in from_multiple_choice(records, "f.json")] == ["B", "B"]


def test_multiple_choice_hub_style_choices() -> None:
    rec = {
        "question": "Q?",
        "choices": {"text": ["a", "b", "c"], "label": ["1", "2", "3"]},
        "answerKey": "3",
    }
    (ex,) = from_multiple_choice([rec], "f.json")
    assert ex.answer == "C"
    assert ex.options == ("A", "B", "C")


def test_mmlu_csv_with_index_header(tmp_path: Path) -> None:
    path = tmp_path / "algebra_test.csv"
    path.write_text("question,choice0,choice1,choice2,choice3,answer\nDegree?,0,4,2,6,1\n")
    (ex,) = from_multiple_choice(read_records(path), str(path))
    assert ex.prompt == "Degree?\nA. 0\nB. 4\nC. 2\nD. 6\nAnswer:"
    assert ex.answer == "B"


def test_mmlu_csv_original_letters_without_header(tmp_path: Path) -> None:
    from retain.data.general import MMLU_FIELDS

    path = tmp_path / "algebra_test.csv"
    path.write_text("Pick one,1,2,3,4,C\nAgain,w,x,y,z,A\n")
    got = from_multiple_choice(read_records(path, fieldnames=MMLU_FIELDS), str(path))
    assert [ex.answer for ex in got] == ["C", "A"]


def test_arc_official_jsonl(tmp_path: Path) -> None:
    rec = {
        "id": "x",
        "question": {
            "stem": "Which is a gas?",
            "choices": [{"text": "ice", "label": "A"}, {"text": "steam", "label": "B"}],
        },
        "answerKey": "B",
    }
    path = write_jsonl(tmp_path / "arc.jsonl", [rec])
    (ex,) = from_multiple_choice(read_records(path), str(path))
    assert ex == Example("Which is a gas?\nA. ice\nB. steam\nAnswer:", "B", ("A", "B"))


def test_arc_official_real_file() -> None:
    path = DATA / "arc_challenge_official" / "ARC-Challenge-Dev.jsonl"
    if not path.is_file():
        pytest.skip(f"shared benchmark data not found under {DATA}")
    got = from_multiple_choice(read_records(path), str(path))
    assert len(got) == 294
    assert all(ex.answer in (ex.options or ()) for ex in got)


def test_multiple_choice_errors(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "mc.jsonl",
        [{"question": "Q", "choices": ["a", "b"], "answer": 0}, {"question": "Q", "answer": 0}],
    )
    with pytest.raises(DataFormatError, match=r"mc\.jsonl line 2 \(record 1\): field 'choices'"):
        from_multiple_choice(read_records(path), str(path))
    with pytest.raises(DataFormatError, match=r"record 0: field 'answer' is 5; expected a 0-based"):
        from_multiple_choice([{"question": "Q", "choices": ["a", "b"], "answer": 5}], "f.json")
    mmlu = [{"question": "Q", "choice0": "a", "choice1": "b", "answer": "a"}]
    with pytest.raises(DataFormatError, match=r"record 0: field 'answer' is 'a'"):
        from_multiple_choice(mmlu, "f.csv")
    two = [{"text": "a", "label": "A"}, {"text": "b", "label": "B"}]
    arc = [{"question": {"stem": "Q", "choices": two}, "answerKey": "E"}]
    with pytest.raises(DataFormatError, match=r"record 0: field 'answerKey' is 'E'"):
        from_multiple_choice(arc, "f.jsonl")


# --- gsm8k and text -----------------------------------------------------------------------


def test_gsm8k() -> None:
    rec = {
        "question": "Natalia sold 48 clips, then half as many. Total?",
        "answer": "She sold 48/2 = <<48/2=24>>24 more.\nTotal 48+24 = <<48+24=72>>72.\n#### 72",
    }
    (ex,) = from_gsm8k([rec], "f.jsonl")
    assert ex.prompt == "Question: Natalia sold 48 clips, then half as many. Total?\nAnswer:"
    assert ex.answer == "She sold 48/2 = 24 more.\nTotal 48+24 = 72.\n#### 72"
    assert ex.options is None


def test_gsm8k_needs_final_number(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "g.jsonl", [{"question": "q", "answer": "it is 5"}])
    message = r"g\.jsonl line 1 \(record 0\): field 'answer' has no '#### <number>' ending"
    with pytest.raises(DataFormatError, match=message):
        from_gsm8k(read_records(path), str(path))


def test_text() -> None:
    assert from_text([{"text": "a"}, {"text": "b"}], "f.json") == ["a", "b"]
    with pytest.raises(DataFormatError, match=r"record 1: field 'text' missing"):
        from_text([{"text": "a"}, {"body": "b"}], "f.json")


# --- declared passages (the only part of a prompt that may be cut) -------------------------


def _context(ex: Example) -> str | None:
    return None if ex.context is None else ex.prompt[ex.context[0] : ex.context[1]]


def test_sentence_label_declares_the_text_as_context() -> None:
    records = [
        {"sentence": "great film, would watch again\n", "label": "Good"},
        {"sentence": "Title: Space news\nText: NASA launched a probe.\n", "label": "Bad"},
    ]
    got = from_sentence_label(records, "f.json", ["Good", "Bad"], "Sentiment?")
    assert _context(got[0]) == "great film, would watch again"
    assert _context(got[1]) == "NASA launched a probe."  # the longest labelled field


def test_passage_field_is_the_context_and_the_question_is_not() -> None:
    boolq = "question: is the sky blue\npassage: The sky looks blue because of Rayleigh scattering."
    multirc = (
        "paragraph: A long paragraph about the FBI and its reform in 2001.\n"
        "question: Who wanted reform?\ncandidate answer: Ashcroft\n"
    )
    records = [{"sentence": boolq, "label": "True"}, {"sentence": multirc, "label": "True"}]
    got = from_sentence_label(records, "f.json", ["True", "False"], "True or false?")
    assert _context(got[0]) == "The sky looks blue because of Rayleigh scattering."
    assert _context(got[1]) == "A long paragraph about the FBI and its reform in 2001."


def test_prompt_answer_finds_the_text_of_the_trace_template() -> None:
    trace = (
        "Topic? Choose one.\nOption: World, Sports \nTitle: Match\nText: A long report.\nAnswer:"
    )
    got = from_prompt_answer(
        [{"prompt": trace, "answer": "Sports"}, {"prompt": "2+2=", "answer": "4"}], "f.json"
    )
    assert _context(got[0]) == "A long report."
    assert got[1].context is None


def test_trace_copies_declare_their_passage() -> None:
    path = DATA / "treelora_long_sequence_500" / "MultiRC" / "test.json"
    if not path.is_file():
        pytest.skip(f"shared benchmark data not found under {DATA}")
    got = from_prompt_answer(read_records(path), str(path), ["False", "True"])
    for ex in got:
        passage = _context(ex)
        assert passage is not None and ex.prompt.index("\nparagraph: ") < ex.prompt.index(passage)
        assert "question:" in ex.prompt[ex.context[1] :]  # type: ignore[index]


def test_alpaca_declares_its_input_only() -> None:
    records = [
        {"instruction": "Summarise", "input": "A long article.\n", "output": "short"},
        {"instruction": "Say hi", "input": "", "output": "hi"},
    ]
    got = from_alpaca(records, "f.json")
    assert _context(got[0]) == "A long article."
    assert got[1].context is None


def test_questions_declare_no_context() -> None:
    mc = from_multiple_choice([{"question": "Q?", "choices": ["a", "b"], "answer": 0}], "f")
    gsm = from_gsm8k([{"question": "1+1?", "answer": "2\n#### 2"}], "f")
    assert mc[0].context is None and gsm[0].context is None


def test_context_span_must_lie_inside_the_prompt() -> None:
    with pytest.raises(ValueError, match="context"):
        Example("short", "a", context=(2, 10))


# --- empty answers ------------------------------------------------------------------------


def test_empty_answers_are_rejected(tmp_path: Path) -> None:
    rows = [{"prompt": "p", "answer": "x"}, {"prompt": "q", "answer": "  "}]
    path = write_jsonl(tmp_path / "e.jsonl", rows)
    message = r"e\.jsonl line 2 \(record 1\): field 'answer' is empty"
    with pytest.raises(DataFormatError, match=message):
        from_prompt_answer(read_records(path), str(path))
    with pytest.raises(DataFormatError, match=r"record 0: field 'answer' is empty"):
        from_prompt_answer([{"prompt": "p", "answer": ""}], "f.json", options=["", "no"])
    with pytest.raises(DataFormatError, match=r"record 0: field 'output' is empty"):
        from_alpaca([{"instruction": "Say hi", "output": " \n"}], "f.json")
    with pytest.raises(DataFormatError, match=r"record 0: field 'answer' is empty"):
        from_alpaca([{"instruction": "Solve", "output": "x", "answer": ""}], "f.json")
    with pytest.raises(DataFormatError, match=r"record 0: field 'label' is empty"):
        from_sentence_label([{"sentence": "s", "label": " "}], "f.json", [" ", "Bad"], "i")
