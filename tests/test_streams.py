"""Stream registry, subsampling, `retain streams` and the general-ability suite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retain.config import ConfigError, DataConfig
from retain.data.general import arc_easy_subset, mmlu_subset, wikitext_paragraphs
from retain.data.streams import (
    STREAMS,
    cap_task,
    describe_streams,
    load_stream,
    seeded_subset,
)
from retain.data.task import MATH_STOP, Example, Task

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
needs_data = pytest.mark.skipif(
    not DATA.is_dir(), reason=f"shared benchmark data not found at {DATA} (../shared/data)"
)

ORDERS = {
    "olora-standard-1": "dbpedia amazon yahoo agnews",
    "olora-standard-2": "dbpedia amazon agnews yahoo",
    "olora-standard-3": "yahoo amazon agnews dbpedia",
    "olora-long-4": "mnli cb wic copa qqp boolq rte imdb yelp amazon sst2 dbpedia agnews "
    "multirc yahoo",
    "olora-long-5": "multirc boolq wic mnli cb copa qqp rte imdb sst2 dbpedia agnews yelp "
    "amazon yahoo",
    "olora-long-6": "yelp amazon mnli cb copa qqp rte imdb sst2 dbpedia agnews yahoo multirc "
    "boolq wic",
    "reasoning-5": "agnews boolq openbookqa arc-challenge gsm8k",
}
# (train, test) in the files; MNLI test has two '-' (no gold label) items that are dropped
OLORA_SIZES = {"cb": (250, 56), "copa": (400, 100), "mnli": (500, 98)}
REASONING_SIZES = {
    "agnews": (4000, 7600),
    "boolq": (2000, 3270),
    "openbookqa": (4957, 500),
    "arc-challenge": (1119, 1172),
    "gsm8k": (7473, 1319),
}


def config(stream: str, **kw: object) -> DataConfig:
    return DataConfig(stream=stream, data_dir=str(DATA), **kw)  # type: ignore[arg-type]


def test_registry_names() -> None:
    assert set(STREAMS) == {"builtin", *ORDERS}


@needs_data
@pytest.mark.parametrize("name", [n for n in ORDERS if n.startswith("olora")])
def test_olora_streams(name: str) -> None:
    stream = load_stream(config(name, valid_per_task=10))
    assert stream.name == name
    assert stream.task_names == ORDERS[name].split()
    for task in stream.tasks:
        n_train, n_test = OLORA_SIZES.get(task.name, (500, 100))
        assert (len(task.train), len(task.valid), len(task.test)) == (n_train - 10, 10, n_test)
        # scored as O-LoRA scores it (the option score is computed beside it)
        assert task.scoring == "generate" and task.metric == "olora_exact"
        assert task.test[0].prompt.endswith("Answer:")
        assert all(ex.answer in (ex.options or ()) for ex in task.test)


@needs_data
def test_reasoning_stream() -> None:
    stream = load_stream(config("reasoning-5", valid_per_task=0))
    assert stream.task_names == ORDERS["reasoning-5"].split()
    for task in stream.tasks:
        assert (len(task.train), len(task.test)) == REASONING_SIZES[task.name]
    by_name = {t.name: t for t in stream.tasks}
    gsm8k = by_name["gsm8k"]
    assert (gsm8k.scoring, gsm8k.metric, gsm8k.max_new_tokens) == ("generate", "math_exact", 256)
    assert gsm8k.train[0].answer.endswith("#### 72") and "<<" not in gsm8k.train[0].answer
    assert by_name["openbookqa"].test[0].options == ("answer1", "answer2", "answer3", "answer4")
    assert "\npassage: " in by_name["boolq"].train[0].prompt
    for name in ("agnews", "boolq", "openbookqa", "arc-challenge"):
        assert by_name[name].scoring == "loglik"


@needs_data
def test_caps_are_deterministic_and_seeded() -> None:
    caps = {"max_train_per_task": 20, "max_test_per_task": 7, "valid_per_task": 5}
    a = load_stream(config("olora-standard-1", **caps))
    b = load_stream(config("olora-standard-1", **caps))  # the same config, the same data
    c = load_stream(config("olora-standard-1", subsample_seed=1, **caps))
    for ta, tb, tc in zip(a.tasks, b.tasks, c.tasks, strict=True):
        assert (len(ta.train), len(ta.valid), len(ta.test)) == (20, 5, 7)
        assert (ta.train, ta.valid, ta.test) == (tb.train, tb.valid, tb.test)
        assert ta.train != tc.train
        assert not set(ta.valid) & set(ta.train)
        assert not set(ta.valid) & set(ta.test)


@needs_data
def test_valid_does_not_depend_on_train_cap() -> None:
    small = load_stream(config("olora-standard-1", max_train_per_task=10))
    full = load_stream(config("olora-standard-1"))
    for s, f in zip(small.tasks, full.tasks, strict=True):
        assert s.valid == f.valid and len(s.valid) == 32
        assert set(s.train) <= set(f.train)


def test_cap_task_keeps_small_tasks_trainable() -> None:
    examples = [Example(f"q{i}", "a") for i in range(6)]
    task = Task("t", train=examples, test=examples[:2], scoring="generate", metric="exact_match")
    capped = cap_task(task, DataConfig(valid_per_task=32))
    assert len(capped.valid) == 3 and len(capped.train) == 3
    assert set(capped.valid).isdisjoint(capped.train)
    assert capped.test == task.test


def test_seeded_subset() -> None:
    items = list(range(100))
    a = seeded_subset(items, 10, "0:x")
    assert a == seeded_subset(items, 10, "0:x") == sorted(a)
    assert a != seeded_subset(items, 10, "1:x")
    assert seeded_subset(items, None, "k") == items
    assert seeded_subset(items, 500, "k") == items


def test_unknown_stream_lists_known_names() -> None:
    with pytest.raises(ConfigError, match=r"unknown stream 'nope'.*olora-standard-1.*reasoning-5"):
        load_stream(DataConfig(stream="nope"))


def test_missing_data_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError) as info:
        load_stream(DataConfig(stream="olora-standard-1", data_dir=str(missing)))
    assert str(info.value) == (
        f"data directory '{missing}' not found (looked at {missing}); pass --data-dir, "
        "data.data_dir=... or set RETAIN_DATA_DIR"
    )


def test_missing_relative_data_dir_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RETAIN_DATA_DIR", raising=False)
    with pytest.raises(ConfigError) as info:
        load_stream(DataConfig(stream="olora-standard-1"))
    assert str(info.value) == (
        f"data directory '../shared/data' not found (looked at {tmp_path}/../shared/data, "
        f"relative to the working directory {tmp_path}); pass --data-dir, data.data_dir=... "
        "or set RETAIN_DATA_DIR"
    )


def test_retain_data_dir_sets_the_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETAIN_DATA_DIR", str(tmp_path / "elsewhere"))
    assert DataConfig().data_dir == str(tmp_path / "elsewhere")
    assert DataConfig(data_dir="mine").data_dir == "mine"  # an explicit value still wins
    with pytest.raises(ConfigError, match=r"elsewhere' \(from RETAIN_DATA_DIR\) not found"):
        load_stream(DataConfig(stream="olora-standard-1"))
    monkeypatch.delenv("RETAIN_DATA_DIR")
    assert DataConfig().data_dir == "../shared/data"


def test_builtin_stream_sizes() -> None:
    cfg = DataConfig(stream="builtin", max_train_per_task=12, max_test_per_task=5, valid_per_task=4)
    a = load_stream(cfg)
    assert len(a) >= 5
    for task in a.tasks:
        assert (len(task.train), len(task.valid), len(task.test)) == (12, 4, 5)
    b = load_stream(cfg)
    assert [t.train for t in a.tasks] == [t.train for t in b.tasks]


# --- general-ability suite ----------------------------------------------------------------


@needs_data
def test_general_suite() -> None:
    mmlu = mmlu_subset(DATA)
    assert (mmlu.name, mmlu.train, len(mmlu.test)) == ("mmlu", [], 57 * 10)
    first = mmlu.test[0]  # cloze: the answer texts are the options, the question the prompt
    assert first.prompt.startswith("Question: ") and first.prompt.endswith("\nAnswer:")
    assert len(first.options) == 4 and first.answer in first.options
    assert not any(o in ("A", "B", "C", "D") for o in first.options)
    assert mmlu_subset(DATA).test == mmlu.test
    assert mmlu_subset(DATA, seed=1).test != mmlu.test
    two = mmlu_subset(DATA, per_subject=3, subjects=["anatomy", "astronomy"])
    assert len(two.test) == 6
    with pytest.raises(ConfigError, match="unknown MMLU subjects \\['astrology'\\]"):
        mmlu_subset(DATA, subjects=["astrology"])

    arc = arc_easy_subset(DATA, n=25)
    assert (arc.name, arc.train, len(arc.test)) == ("arc_easy", [], 25)
    assert all(
        ex.answer in ex.options
        and not ex.options[0].startswith("answer")
        and "Answer1" not in ex.prompt
        for ex in arc.test
    )
    assert arc.test == arc_easy_subset(DATA, n=25).test

    paragraphs = wikitext_paragraphs(DATA, n=20)
    assert len(paragraphs) == 20
    assert paragraphs[0].startswith("Robert Boulter is an English film")
    assert not any(p.startswith("=") for p in paragraphs)


def test_mmlu_original_layout(tmp_path: Path) -> None:
    """Headerless MMLU files with letter answers, as in the original release."""
    folder = tmp_path / "mmlu" / "test"
    folder.mkdir(parents=True)
    rows = "".join(f"Q{i}?,a,b,c,d,{'ABCD'[i % 4]}\n" for i in range(8))
    (folder / "anatomy_test.csv").write_text(rows)
    task = mmlu_subset(tmp_path, per_subject=5)
    assert len(task.test) == 5
    for ex in task.test:  # scored as cloze: the answer is the text of the lettered choice
        number = int(ex.prompt.removeprefix("Question: Q").split("?")[0])
        assert ex.answer == "abcd"[number % 4] and ex.options == ("a", "b", "c", "d")


@needs_data
def test_reasoning_gsm8k_stops_at_a_new_question() -> None:
    stream = load_stream(config("reasoning-5", valid_per_task=0, max_test_per_task=2))
    assert stream.tasks[-1].stop == MATH_STOP


# --- `retain streams` -----------------------------------------------------------------------


def test_describe_streams_without_data(tmp_path: Path) -> None:
    text = describe_streams(tmp_path / "no-data-here")
    for name in STREAMS:
        assert f"\n{name}: " in f"\n{text}"
    lines = text.splitlines()
    assert lines[0] == "builtin: tasks generated by our own code from the seed; no data files"
    assert lines[1].split() == ["#", "task", "format", "scoring", "metric", "train", "test"]
    assert lines[2].split() == [
        "1",
        "capital_lookup",
        "generated",
        "loglik",
        "accuracy",
        "200",
        "24",
    ]
    assert "  5  gsm8k          gsm8k           generate            math_exact" in text
    assert "openbookqa     alpaca          loglik or generate  from the data" in text
    assert f"data directory {tmp_path}/no-data-here was not found" in text
    assert text.endswith("(README, 'Your own stream (YAML)')\n")


@needs_data
def test_describe_streams_with_sizes() -> None:
    text = describe_streams(DATA)
    rows = {tuple(line.split()[1:]) for line in text.splitlines() if line.startswith("  ")}
    assert ("cb", "prompt_answer", "generate", "olora_exact", "250", "56") in rows
    assert ("mnli", "prompt_answer", "generate", "olora_exact", "500", "98") in rows
    assert ("openbookqa", "alpaca", "loglik", "accuracy", "4957", "500") in rows
    assert ("gsm8k", "gsm8k", "generate", "math_exact", "7473", "1319") in rows
    assert f"sizes: from {DATA.resolve()}" in text


def test_builtin_data_follow_the_subsample_seed_not_the_run_seed() -> None:
    """Seeds of a bench must share test examples (paired comparisons across seeds)."""
    a = load_stream(DataConfig(stream="builtin", max_train_per_task=8, max_test_per_task=4))
    b = load_stream(DataConfig(stream="builtin", max_train_per_task=8, max_test_per_task=4))
    c = load_stream(
        DataConfig(stream="builtin", max_train_per_task=8, max_test_per_task=4, subsample_seed=1)
    )
    assert [t.test for t in a.tasks] == [t.test for t in b.tasks]
    assert [t.test for t in a.tasks] != [t.test for t in c.tasks]


def test_arc_choices_are_read_from_the_llm_adapters_instruction(tmp_path: Path) -> None:
    folder = tmp_path / "llm_adapters_eval" / "ARC-Easy"
    folder.mkdir(parents=True)
    good = {
        "instruction": "Please choose the correct answer to the question: Which is a "
        "gas?\n\nAnswer1: iron Answer2: steam Answer3: ice\n\nAnswer format: "
        "answer1/answer2/answer3",
        "input": "",
        "output": "",
        "answer": "answer2",
    }
    (folder / "test.json").write_text(json.dumps([good]))
    (ex,) = arc_easy_subset(tmp_path, n=1).test
    assert (ex.prompt, ex.options, ex.answer) == (
        "Question: Which is a gas?\nAnswer:",
        ("iron", "steam", "ice"),
        "steam",
    )
    bad = {**good, "answer": "answer4"}
    (folder / "test.json").write_text(json.dumps([good, bad]))
    with pytest.raises(ValueError, match=r"test\.json.*record 1.*do not match"):
        arc_easy_subset(tmp_path, n=2)
