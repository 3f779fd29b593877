"""YAML stream files: paths, field mapping, labels, validation files, budgets, passages."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from retain.config import ConfigError, DataConfig
from retain.data.readers import DataFileNotFoundError, DataFormatError
from retain.data.stream_file import load_stream_file, read_stream_yaml, stream_from_spec
from retain.data.streams import load_stream
from retain.data.task import TaskBudget, task_lr, task_steps
from retain.data.task_spec import DataWarning


def write_json(path: Path, records: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records))
    return path


def qa_records(n: int, start: int = 0) -> list[dict[str, str]]:
    return [{"q": f"What is {i} plus one?", "a": str(i + 1)} for i in range(start, start + n)]


def stream_dir(tmp_path: Path, body: str) -> Path:
    """A stream file in tmp/streams/ whose data live beside it in tmp/streams/data/."""
    folder = tmp_path / "streams"
    write_json(folder / "data" / "train.json", qa_records(12))
    write_json(folder / "data" / "test.json", qa_records(4, start=100))
    write_json(folder / "data" / "dev.json", qa_records(4, start=200))
    (folder / "mine.yaml").write_text(body)
    return folder / "mine.yaml"


QA = """
tasks:
  - name: qa
    format: prompt_answer
    train: data/train.json
    test: data/test.json
    prompt_field: q
    answer_field: a
    metric: token_f1
"""


def test_relative_paths_resolve_against_the_stream_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = stream_dir(tmp_path, QA)
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    config = DataConfig(stream=str(path), data_dir="/nonexistent", valid_per_task=2)
    stream = load_stream(config)
    assert stream.name == "mine"
    (qa,) = stream.tasks
    assert (len(qa.train), len(qa.valid), len(qa.test)) == (10, 2, 4)
    assert qa.test[0].prompt == "What is 100 plus one?" and qa.test[0].answer == "101"
    # the same file named relative to the working directory
    monkeypatch.chdir(tmp_path)
    assert load_stream_file("streams/mine.yaml").tasks[0].test == qa.test


def test_root_and_environment_variables_in_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "shared"
    write_json(data / "qa" / "train.json", qa_records(4))
    write_json(data / "qa" / "test.json", qa_records(2))
    spec = QA.replace("data/train.json", "train.json").replace("data/test.json", "test.json")
    (tmp_path / "a.yaml").write_text("root: shared/qa\n" + spec)
    assert len(load_stream_file(tmp_path / "a.yaml").tasks[0].train) == 4
    monkeypatch.setenv("MY_DATA", str(data))
    env = QA.replace("data/", "$MY_DATA/qa/")
    (tmp_path / "b" / "c").mkdir(parents=True)
    (tmp_path / "b" / "c" / "b.yaml").write_text(env)
    assert len(load_stream_file(tmp_path / "b" / "c" / "b.yaml").tasks[0].test) == 2


def test_missing_files_say_where_they_were_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = stream_dir(tmp_path, QA.replace("data/test.json", "data/qa_test.jsonl"))
    with pytest.raises(DataFileNotFoundError) as info:
        load_stream_file(path)
    folder = path.parent
    assert str(info.value) == (
        f"data file not found: {folder}/data/qa_test.jsonl (task 'qa' test: "
        f"'data/qa_test.jsonl', relative to the stream file's folder {folder})"
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"stream file 'nope.yaml' not found \(looked at "
                       rf"{tmp_path}/nope.yaml; a relative path is taken from the working"):
        load_stream(DataConfig(stream="nope.yaml"))


# --- field mapping ------------------------------------------------------------------------


def test_field_mapping_for_each_format(tmp_path: Path) -> None:
    write_json(tmp_path / "sl.json", [{"text": "great film", "y": "pos"}] * 3)
    write_json(tmp_path / "alp.json", [{"task": "Say hi", "ctx": "to Ana", "out": "hi Ana"}])
    write_json(tmp_path / "mc.json", [{"stem": "Sky?", "opts": ["red", "blue"], "key": 1}])
    write_json(tmp_path / "g.json", [{"problem": "1+1?", "solution": "1+1=2\n#### 2"}])
    spec = [
        {"name": "sl", "train": "sl.json", "test": "sl.json", "format": "sentence_label",
         "labels": ["pos", "neg"], "instruction": "Sentiment?", "sentence_field": "text",
         "label_field": "y"},
        {"name": "alp", "train": "alp.json", "test": "alp.json", "format": "alpaca",
         "instruction_field": "task", "input_field": "ctx", "output_field": "out"},
        {"name": "mc", "train": "mc.json", "test": "mc.json", "format": "multiple_choice",
         "question_field": "stem", "choices_field": "opts", "answer_field": "key"},
        {"name": "g", "train": "g.json", "test": "g.json", "format": "gsm8k",
         "question_field": "problem", "answer_field": "solution"},
    ]
    sl, alp, mc, g = stream_from_spec(spec, tmp_path).tasks
    assert sl.test[0].prompt.endswith("great film\nAnswer:") and sl.test[0].answer == "pos"
    assert alp.test[0].prompt == "Say hi\nto Ana\nAnswer:" and alp.test[0].answer == "hi Ana"
    assert mc.test[0].answer == "B" and mc.scoring == "loglik"
    assert g.test[0].answer.endswith("#### 2")


def test_field_mapping_errors_name_the_mapping(tmp_path: Path) -> None:
    write_json(tmp_path / "x.json", [{"q": "a"}])
    task = {"name": "qa", "train": "x.json", "test": "x.json", "format": "prompt_answer",
            "prompt_field": "q", "answer_field": "a"}
    with pytest.raises(DataFormatError, match=r"record 0: field 'answer' missing.*"
                       r"\(task 'qa' reads answer from 'a', prompt from 'q'\)"):
        stream_from_spec([task], tmp_path)
    wrong = {**task, "label_field": "y"}
    with pytest.raises(ConfigError, match="label_field do not apply to format prompt_answer; "
                       "it reads prompt_field, answer_field"):
        stream_from_spec([wrong], tmp_path)


# --- labels as YAML writes them -------------------------------------------------------------


def test_unquoted_yes_no_labels_stay_text(tmp_path: Path) -> None:
    write_json(tmp_path / "yn.json", [{"prompt": "Even: 4?", "answer": "yes"},
                                      {"prompt": "Even: 3?", "answer": "no"}])
    text = "tasks:\n  - {name: yn, train: yn.json, test: yn.json, format: prompt_answer,\n" \
           "     labels: [yes, no], drop_answers: [off]}\n"
    (tmp_path / "yn.yaml").write_text(text)
    (task,) = load_stream_file(tmp_path / "yn.yaml").tasks
    assert task.train[0].options == ("yes", "no") and task.scoring == "loglik"
    assert read_stream_yaml("a: [on, off, y, n, 1, 1.5e-3]") == {
        "a": ["on", "off", "y", "n", 1, 1.5e-3]
    }


def test_boolean_and_number_labels(tmp_path: Path) -> None:
    write_json(tmp_path / "r.json", [{"prompt": "Stars?", "answer": "5"}])
    (tmp_path / "bool.yaml").write_text(
        "tasks:\n  - {name: t, train: r.json, test: r.json, format: prompt_answer,"
        " labels: [true, false]}\n"
    )
    with pytest.raises(ConfigError, match=r"labels.*value True is a boolean, not text.*quote it"):
        load_stream_file(tmp_path / "bool.yaml")
    # booleans read by another YAML reader (YAML 1.1: yes -> True) fail the same way
    spec = [{"name": "t", "train": "r.json", "test": "r.json", "format": "prompt_answer",
             "labels": [True, False]}]
    with pytest.raises(ConfigError, match="value True is a boolean"):
        stream_from_spec(spec, tmp_path)
    stars = [{**spec[0], "labels": [1, 2, 3, 4, 5]}]
    assert stream_from_spec(stars, tmp_path).tasks[0].test[0].options == ("1", "2", "3", "4", "5")


# --- validation files ---------------------------------------------------------------------


def test_validation_file_is_used_and_capped(tmp_path: Path) -> None:
    path = stream_dir(tmp_path, QA.replace("    metric:", "    valid: data/dev.json\n    metric:"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stream = load_stream(DataConfig(stream=str(path), valid_per_task=3))
    (qa,) = stream.tasks
    assert len(qa.train) == 12 and len(qa.valid) == 3 and stream.warnings == []
    assert all(ex.prompt.startswith("What is 2") for ex in qa.valid)
    none = load_stream(DataConfig(stream=str(path), valid_per_task=0))
    assert none.tasks[0].valid == [] and len(none.tasks[0].train) == 12


def test_validation_identical_to_test_is_warned(tmp_path: Path) -> None:
    body = QA.replace("    metric:", "    valid: data/eval.json\n    metric:")
    path = stream_dir(tmp_path, body)
    folder = path.parent / "data"
    (folder / "eval.json").write_bytes((folder / "test.json").read_bytes())
    with pytest.warns(DataWarning, match=r"task 'qa': validation file .*eval\.json is "
                      r"byte-identical to test file .*test\.json: choosing checkpoints"):
        stream = load_stream(DataConfig(stream=str(path)))
    assert len(stream.warnings) == 1 and "byte-identical" in stream.warnings[0]


def test_validation_overlapping_test_is_warned(tmp_path: Path) -> None:
    path = stream_dir(tmp_path, QA.replace("    metric:", "    valid: data/eval.json\n    metric:"))
    mixed = qa_records(2, start=100) + qa_records(3, start=300)  # 2 of them are test items
    write_json(path.parent / "data" / "eval.json", mixed)
    with pytest.warns(DataWarning, match=r"task 'qa': 2 of 5 validation examples .* also "
                      r"appear in test"):
        load_stream_file(path)


# --- per-task budgets ---------------------------------------------------------------------


BUDGETS = """
tasks:
  - {name: a, format: prompt_answer, train: data/train.json, test: data/test.json,
     prompt_field: q, answer_field: a, steps: 7, lr: 1.0e-3, max_train: 5, max_test: 3}
  - {name: b, format: prompt_answer, train: data/train.json, test: data/test.json,
     prompt_field: q, answer_field: a, epochs: 2}
  - {name: c, format: prompt_answer, train: data/train.json, test: data/test.json,
     prompt_field: q, answer_field: a}
"""


def test_per_task_budgets_are_parsed_and_caps_applied(tmp_path: Path) -> None:
    path = stream_dir(tmp_path, BUDGETS)
    config = DataConfig(stream=str(path), valid_per_task=2, max_train_per_task=8)
    a, b, c = load_stream(config).tasks
    assert a.budget == TaskBudget(steps=7, lr=1e-3, max_train=5, max_test=3)
    assert b.budget == TaskBudget(epochs=2.0)
    assert c.budget == TaskBudget()
    assert (len(a.train), len(a.test)) == (5, 3)  # the task's caps are below the run's
    assert (len(b.train), len(b.test)) == (8, 4)  # the run's cap applies
    # what the loop derives from them (batch 4): own steps, own epochs, the run's default
    assert task_steps(a.budget, 100, None, len(a.train), 4) == 7
    assert task_steps(b.budget, 100, None, len(b.train), 4) == 4
    assert task_steps(c.budget, 100, None, len(c.train), 4) == 100
    assert task_steps(c.budget, None, 1.5, 10, 4) == 4
    assert (task_lr(a.budget, 2e-4), task_lr(c.budget, 2e-4)) == (1e-3, 2e-4)


def test_budget_errors(tmp_path: Path) -> None:
    both = BUDGETS.replace("epochs: 2", "epochs: 2, steps: 3")
    with pytest.raises(ConfigError, match=r"tasks\[1\].*set steps or epochs for a task, not both"):
        load_stream_file(stream_dir(tmp_path, both))
    with pytest.raises(ConfigError, match=r"tasks\[0\]: steps: Input should be greater than 0"):
        load_stream_file(stream_dir(tmp_path, BUDGETS.replace("steps: 7", "steps: 0")))


# --- passages, sources and what the metrics need ------------------------------------------


def test_context_pattern_declares_the_passage_and_sari_source(tmp_path: Path) -> None:
    records = [{"prompt": "Simplify: It is imperative to depart.\nSimple:", "answer": "Leave."}]
    write_json(tmp_path / "s.json", records)
    task = {"name": "s", "train": "s.json", "test": "s.json", "format": "prompt_answer",
            "metric": "sari", "context_pattern": "Simplify: (?P<context>.*)\nSimple:"}
    (s,) = stream_from_spec([task], tmp_path).tasks
    ex = s.test[0]
    assert ex.prompt[slice(*ex.context)] == "It is imperative to depart."  # type: ignore[misc]
    assert ex.source_text == "It is imperative to depart."
    with pytest.raises(ConfigError, match=r"task 's' test\[0\]: metric sari needs the sentence"):
        stream_from_spec([{k: v for k, v in task.items() if k != "context_pattern"}], tmp_path)
    with pytest.raises(DataFormatError, match="prompt does not match context_pattern"):
        stream_from_spec([{**task, "context_pattern": "Rewrite: (.*)"}], tmp_path)
    with pytest.raises(ConfigError, match="needs a group around the passage"):
        stream_from_spec([{**task, "context_pattern": "Simplify: .*"}], tmp_path)


def test_source_field(tmp_path: Path) -> None:
    records = [{"prompt": "Make it plain: We shall convene anon.\nAnswer:",
                "answer": "We meet soon.", "src": "We shall convene anon."}]
    write_json(tmp_path / "s.json", records)
    task = {"name": "s", "train": "s.json", "test": "s.json", "format": "prompt_answer",
            "metric": "sari", "source_field": "src"}
    ex = stream_from_spec([task], tmp_path).tasks[0].test[0]
    assert ex.original == "We shall convene anon." and ex.source_text == ex.original
    assert ex.prompt[slice(*ex.context)] == ex.original  # type: ignore[misc]
    with pytest.raises(DataFormatError, match=r"field 'source' \(source_field\) missing"):
        stream_from_spec([{**task, "source_field": "source"}], tmp_path)


def test_choice_letter_needs_letter_answers(tmp_path: Path) -> None:
    write_json(tmp_path / "c.json", [{"prompt": "Pick: A. 1 B. 2\nAnswer:", "answer": "two"}])
    task = {"name": "c", "train": "c.json", "test": "c.json", "format": "prompt_answer",
            "metric": "choice_letter"}
    with pytest.raises(ConfigError, match="choice_letter needs answers that begin with a capital "
                       "choice letter.*got 'two'"):
        stream_from_spec([task], tmp_path)


def test_generation_budget_and_stops_per_task(tmp_path: Path) -> None:
    path = stream_dir(tmp_path, QA + '    max_new_tokens: 5\n    stop: ["\\n", "###"]\n')
    (qa,) = load_stream(DataConfig(stream=str(path))).tasks
    assert qa.max_new_tokens == 5 and qa.stop == ("\n", "###")
    (capped,) = load_stream(DataConfig(stream=str(path), max_new_tokens=3)).tasks
    assert capped.decoding == {"scoring": "greedy", "max_new_tokens": 3, "metric": "token_f1",
                               "stop": ["\n", "###"]}


def test_single_quoted_new_line_stop_is_warned(tmp_path: Path) -> None:
    path = stream_dir(tmp_path, QA + "    stop: ['\\n']\n")  # YAML '\n' is a backslash and n
    with pytest.warns(DataWarning, match=r"stop string '\\\\n' holds a backslash"):
        (qa,) = load_stream_file(path).tasks
    assert qa.stop == ("\\n",)
