"""Streams defined as data (a YAML or dict spec over local files) and their load-time checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from retain.config import ConfigError, DataConfig
from retain.data.readers import DataFormatError
from retain.data.streams import cap_task, load_stream, stream_from_spec
from retain.data.task import MATH_STOP, Example, Task


def make_files(root: Path) -> dict[str, object]:
    """One small file per record format, and a spec using each of them."""
    (root / "pa").mkdir()
    (root / "pa" / "train.json").write_text(
        json.dumps(
            [
                {"prompt": f"{i} is even?", "answer": "yes" if i % 2 == 0 else "no"}
                for i in range(10)
            ]
        )
    )
    (root / "pa" / "test.jsonl").write_text(json.dumps({"prompt": "3 is even?", "answer": "no"}))
    (root / "pa" / "labels.json").write_text(json.dumps(["yes", "no"]))
    (root / "sl.json").write_text(json.dumps([{"sentence": "good film", "label": "Good"}] * 4))
    mc = "question,choice0,choice1,answer\nSky?,red,blue,1\nSea?,blue,red,0\n"
    (root / "mc.csv").write_text(mc)
    alpaca = [{"instruction": "Say hi", "input": "", "output": "hi"}]
    (root / "alp.json").write_text(json.dumps(alpaca))
    gsm8k = {"question": "1+1?", "answer": "1+1=<<1+1=2>>2\n#### 2"}
    (root / "g.jsonl").write_text(json.dumps(gsm8k))
    return {
        "name": "mine",
        "tasks": [
            {
                "name": "parity",
                "train": "pa/train.json",
                "test": "pa/test.jsonl",
                "format": "prompt_answer",
                "labels": "pa/labels.json",
            },
            {
                "name": "sentiment",
                "train": "sl.json",
                "test": str(root / "sl.json"),
                "format": "sentence_label",
                "labels": ["Good", "Bad"],
                "instruction": "Sentiment?",
            },
            {"name": "colours", "train": "mc.csv", "test": "mc.csv", "format": "multiple_choice"},
            {"name": "greet", "train": "alp.json", "test": "alp.json", "format": "alpaca"},
            {"name": "math", "train": "g.jsonl", "test": "g.jsonl", "format": "gsm8k"},
        ],
    }


def test_stream_from_spec(tmp_path: Path) -> None:
    spec = make_files(tmp_path)
    stream = stream_from_spec(spec, tmp_path)
    assert stream.name == "mine"
    assert stream.task_names == ["parity", "sentiment", "colours", "greet", "math"]
    t = {task.name: task for task in stream.tasks}
    assert t["parity"].scoring == "loglik" and t["parity"].train[0].options == ("yes", "no")
    assert t["sentiment"].train[0].prompt == "Sentiment?\nOption: Good, Bad \ngood film\nAnswer:"
    assert t["colours"].test[0].answer == "B"
    assert (t["greet"].scoring, t["greet"].metric) == ("generate", "exact_match")
    assert (t["math"].metric, t["math"].max_new_tokens) == ("math_exact", 256)
    assert len(t["parity"].train) == 10


def test_yaml_stream_file_is_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = make_files(tmp_path)
    del spec["name"]
    (tmp_path / "my_stream.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.chdir(tmp_path)
    cfg = DataConfig(stream="my_stream.yaml", data_dir=".", max_train_per_task=3, valid_per_task=2)
    stream = load_stream(cfg)
    assert stream.name == "my_stream"
    parity = stream.tasks[0]
    assert (len(parity.train), len(parity.valid)) == (3, 2)


def test_spec_errors(tmp_path: Path) -> None:
    spec = make_files(tmp_path)
    tasks: list[dict[str, object]] = spec["tasks"]  # type: ignore[assignment]
    with pytest.raises(ConfigError, match=r"tasks\[0\]: colour: Extra inputs.*allowed: name"):
        stream_from_spec([{**tasks[0], "colour": "red"}], tmp_path)
    with pytest.raises(ConfigError, match=r"tasks\[1\]: format: Input should be"):
        stream_from_spec([tasks[0], {**tasks[1], "format": "xml"}], tmp_path)
    with pytest.raises(ConfigError, match=r"tasks\[0\]: test: Field required"):
        stream_from_spec([{k: v for k, v in tasks[0].items() if k != "test"}], tmp_path)
    with pytest.raises(ConfigError, match="sentence_label needs labels"):
        stream_from_spec([{k: v for k, v in tasks[1].items() if k != "labels"}], tmp_path)
    with pytest.raises(ConfigError, match="repeated: \\['parity'\\]"):
        stream_from_spec([tasks[0], tasks[0]], tmp_path)
    with pytest.raises(ConfigError, match="unknown keys"):
        stream_from_spec({"tasks": tasks, "order": []}, tmp_path)
    with pytest.raises(DataFormatError, match="data file not found: .*missing.json"):
        stream_from_spec([{**tasks[0], "train": "missing.json"}], tmp_path)


def test_bad_record_in_a_stream_names_file(tmp_path: Path) -> None:
    spec = make_files(tmp_path)
    (tmp_path / "pa" / "test.jsonl").write_text('{"prompt": "x", "answer": "maybe"}\n')
    with pytest.raises(DataFormatError, match=r"test\.jsonl line 1 \(record 0\): field 'answer'"):
        stream_from_spec(spec, tmp_path)


# --- load-time checks: no empty test split, stop strings ---------------------------------


def test_task_without_test_examples_fails_at_load_with_its_name(tmp_path: Path) -> None:
    spec = make_files(tmp_path)
    (tmp_path / "pa" / "test.jsonl").write_text("")
    with pytest.raises(ConfigError, match=r"task 'parity': no test examples in .*test\.jsonl"):
        stream_from_spec(spec, tmp_path)


def test_task_whose_test_answers_are_all_dropped_fails_at_load(tmp_path: Path) -> None:
    spec = make_files(tmp_path)
    tasks: list[dict[str, object]] = spec["tasks"]  # type: ignore[assignment]
    parity = {**tasks[0], "drop_answers": ["no"]}  # the one test record answers "no"
    with pytest.raises(ConfigError, match=r"task 'parity': no test examples"):
        stream_from_spec([parity], tmp_path)


def test_cap_task_refuses_a_task_without_test_examples() -> None:
    examples = [Example(f"q{i}", "a") for i in range(4)]
    task = Task("t", train=examples, test=[], scoring="generate", metric="exact_match")
    with pytest.raises(ConfigError, match=r"task 't': no test examples"):
        cap_task(task, DataConfig(valid_per_task=0))


def test_empty_label_in_labels_file_is_rejected(tmp_path: Path) -> None:
    spec = make_files(tmp_path)
    (tmp_path / "pa" / "labels.json").write_text(json.dumps(["yes", " "]))
    with pytest.raises(DataFormatError, match=r"labels\.json: label 1 is empty"):
        stream_from_spec(spec, tmp_path)


def test_stop_strings_per_task_with_math_defaults(tmp_path: Path) -> None:
    spec = make_files(tmp_path)
    tasks: list[dict[str, object]] = spec["tasks"]  # type: ignore[assignment]
    greet = {**tasks[3], "stop": ["\n"]}
    stream = stream_from_spec([tasks[4], greet, tasks[0]], tmp_path)
    math, greeting, parity = stream.tasks
    assert math.stop == MATH_STOP and math.decoding["stop"] == list(MATH_STOP)
    assert greeting.stop == ("\n",) and parity.stop == ()
    with pytest.raises(ConfigError, match=r"tasks\[0\]: stop\.0"):
        stream_from_spec([{**tasks[4], "stop": [""]}], tmp_path)
