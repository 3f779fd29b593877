"""The weak cases of a hostile-input battery (issue 27), table-driven: each bad input must end in
one line that names the file (or key) and says what to do, or be handled outright."""

from __future__ import annotations

import errno
import importlib.util
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retain.cli import app, user_message
from retain.config import load_config
from tests.conftest import FinishedRun
from tests.test_engine import tiny_config

runner = CliRunner()
TASK = "{name: qa, train: train.jsonl, test: test.jsonl, format: prompt_answer}"
ROWS = "".join(f'{{"prompt": "q{i}", "answer": "a{i}"}}\n' for i in range(6))


def _stream(folder: Path, task: str = TASK, train: str = ROWS, test: str = ROWS) -> Path:
    (folder / "train.jsonl").write_text(train)
    (folder / "test.jsonl").write_text(test.replace('"q', '"t'))
    path = folder / "s.yaml"
    path.write_text(f"tasks:\n  - {task}\n")
    return path


def _message(call: Callable[[], object]) -> str:
    """The one-line message a user gets for what `call` raises."""
    with pytest.raises(Exception) as err:  # noqa: PT011 - the message is what is tested
        call()
    message = user_message(err.value)
    assert message is not None, f"no user message for {err.value!r}"
    assert "\n" not in message
    return message


# ----------------------------------------------------------------- inputs: (setup -> call)
def _empty_train(tmp: Path) -> Callable[[], object]:
    from retain.data.stream_file import load_stream_file

    path = _stream(tmp, train="")
    return lambda: load_stream_file(path)


def _non_utf8_yaml(tmp: Path) -> Callable[[], object]:
    path = tmp / "run.yaml"
    path.write_bytes(b"name: x\ntrain: {lr: 1e-4}\n# caf\xe9\n")
    return lambda: load_config(path)


def _directory_as_stream(tmp: Path) -> Callable[[], object]:
    from retain.data.stream_file import load_stream_file

    return lambda: load_stream_file(tmp)


def _duplicate_labels(tmp: Path) -> Callable[[], object]:
    from retain.data.stream_file import load_stream_file

    task = TASK.replace("}", ", labels: [yes, no, yes]}")
    path = _stream(tmp, task=task)
    return lambda: load_stream_file(path)


def _duplicate_yaml_key(tmp: Path) -> Callable[[], object]:
    path = tmp / "run.yaml"
    path.write_text("train:\n  lr: 1e-4\n  batch_size: 4\n  lr: 1e-3\n")
    return lambda: load_config(path)


def _num_tasks_above_stream(tmp: Path) -> Callable[[], object]:
    from retain.data.streams import load_stream

    path = _stream(tmp)
    config = load_config(None, [f"data.stream={path}", "data.num_tasks=3"])
    return lambda: load_stream(config.data)


def _full_disk(tmp: Path) -> Callable[[], object]:
    from retain.storage.files import write_json

    target = tmp / "metrics.json"

    def write() -> None:
        def full(*args: object, **kwargs: object) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        original = Path.write_text
        Path.write_text = full  # type: ignore[assignment, method-assign]
        try:
            write_json(target, {"a": 1})
        finally:
            Path.write_text = original  # type: ignore[method-assign]

    return write


CASES = {
    "an empty train file": (_empty_train, ["train.jsonl", "no training examples"]),
    "non-UTF-8 bytes in YAML": (_non_utf8_yaml, ["run.yaml", "byte 31", "line 3", "UTF-8"]),
    "a directory as stream file": (_directory_as_stream, ["is a directory", ".yaml"]),
    "duplicate labels": (_duplicate_labels, ["'yes'", "twice"]),
    "duplicate YAML keys": (_duplicate_yaml_key, ["run.yaml", "line 4", "duplicate key 'lr'"]),
    "data.num_tasks above the stream": (_num_tasks_above_stream, ["data.num_tasks=3", "only 1"]),
    "a full disk": (_full_disk, ["no space left", "metrics.json"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_input_gets_one_line_naming_it(tmp_path: Path, case: str) -> None:
    setup, words = CASES[case]
    message = _message(setup(tmp_path))
    for word in words:
        assert word in message, (case, message)


# ----------------------------------------------------------------- damaged run directories
SMALL = ("data.num_tasks=2", "train.steps_per_task=2")  # conftest.finished_run copies it


def _garble(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda run_dir: (run_dir / name).write_bytes(data)


TASK2 = "adapters/task_2/"
DAMAGED = {
    "scores.csv": (["report"], _garble("scores.csv", b"\xff\xfe"), ["scores.csv", "restore"]),
    "adapter safetensors": (["eval"], _garble(TASK2 + "adapter_model.safetensors", b"junk"),
                            ["task_2", "damaged adapter", "restore"]),
    "adapter_config.json": (["eval"], _garble(TASK2 + "adapter_config.json", b"{not json"),
                            ["task_2", "adapter_config.json", "restore"]),
    "config.yaml (eval)": (["eval"], _garble("config.yaml", b"name: [\n"),
                           ["config.yaml", "not valid YAML", "restore"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(DAMAGED))
def test_a_damaged_run_directory_is_named_with_what_to_do(
    finished_run: FinishedRun, case: str
) -> None:
    command, damage, words = DAMAGED[case]
    run_dir = finished_run(*SMALL).run_dir
    damage(run_dir)
    result = runner.invoke(app, [*command, str(run_dir)])
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    for word in words:
        assert word in line, (case, line)


def test_a_damaged_examples_file_is_named_with_what_to_do(tmp_path: Path) -> None:
    from retain.storage.examples import ExampleResults

    path = tmp_path / "examples.npz"
    path.write_bytes(b"PK\x03\x04 not a zip")
    message = _message(lambda: ExampleResults.load(path))
    assert str(path) in message and "damaged" in message and "restore" in message


def test_a_damaged_config_yaml_stops_a_resume_with_what_to_do(
    finished_run: FinishedRun, tmp_path: Path
) -> None:
    from retain.train.loop import run

    run_dir = finished_run(*SMALL).run_dir
    (run_dir / "config.yaml").write_bytes(b"train: {lr: 1\xff}\n")
    message = _message(lambda: run(tiny_config(tmp_path, "name=r", *SMALL)))
    assert "config.yaml" in message and "UTF-8" in message and "restore" in message


def test_a_report_without_metrics_json_uses_the_run_s_own_bootstrap_seed(tmp_path: Path) -> None:
    from retain.eval.uncertainty import bootstrap_metrics
    from retain.results.view import RunView
    from retain.storage.examples import ExampleResults
    from tests.test_report import SCORES_A, TASKS, make_run

    run_dir = make_run(tmp_path, "r", SCORES_A, seed=42, metrics=False)
    examples = ExampleResults.load(run_dir)
    own, other = (bootstrap_metrics(examples, TASKS, ["mmlu"], seed=s)["ap"] for s in (42, 0))
    assert own != other, "the seeds must give other intervals for the test to mean anything"
    assert RunView(run_dir).ci["ap"] == own


# ----------------------------------------------------------------- handled, or warned about
def test_a_utf8_bom_in_csv_is_no_part_of_the_first_column(tmp_path: Path) -> None:
    from retain.data.readers import read_records

    path = tmp_path / "d.csv"
    path.write_bytes("\ufeffprompt,answer\nq,a\n".encode())
    assert list(read_records(path)) == [{"prompt": "q", "answer": "a"}]


def test_train_identical_to_test_is_warned_about(tmp_path: Path) -> None:
    from retain.data.stream_file import load_stream_file

    path = _stream(tmp_path, task=TASK.replace("test: test.jsonl", "test: train.jsonl"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_stream_file(path)
    said = [str(w.message) for w in caught]
    assert any("byte-identical" in s and "train.jsonl" in s and "memoris" in s for s in said)


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed")
def test_report_to_wandb_without_wandb_is_refused_at_start(tmp_path: Path) -> None:
    from retain.train.loop import run

    cfg = tiny_config(tmp_path, "name=w", "train.report_to=wandb", "data.num_tasks=1",
                      "train.steps_per_task=1")
    message = _message(lambda: run(cfg))
    assert "wandb" in message and "pip install wandb" in message
    assert not cfg.run_dir.exists(), "refused before the run directory was made"


def test_hf_data_while_offline_fails_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import retain.data.readers as readers
    from retain.data.readers import read_records

    monkeypatch.setattr(readers, "hub_unreachable", lambda: "the hub cannot be reached (test)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the old code's retries are not waited for
    start = time.perf_counter()
    message = _message(lambda: read_records("hf:retain-test/no-such-dataset:train"))
    assert time.perf_counter() - start < 30
    assert "hf:retain-test/no-such-dataset:train" in message and "cache" in message
