"""The five holes of issue 27, each shown by a test that failed before it was fixed."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from retain.config import ConfigError, load_config
from retain.train.loop import run
from tests.conftest import FinishedRun
from tests.test_engine import tiny_config

SMALL = ("data.num_tasks=2", "train.steps_per_task=2")


def _bomb(levels: int = 5, width: int = 10) -> str:
    """A YAML alias bomb: `width ** levels` leaves from a few hundred bytes."""
    lines = ["a0: &a0 [x]"]
    for i in range(1, levels + 1):
        refs = ", ".join([f"*a{i - 1}"] * width)
        lines.append(f"a{i}: &a{i} [{refs}]")
    lines.append(f"methods: *a{levels}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------- 1. NaN is trained on
@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_a_non_finite_learning_rate_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="train.lr"):
        load_config(None, [f"train.lr={value}"])


def test_a_nan_loss_stops_the_run_naming_step_task_and_cause(tmp_path: Path, monkeypatch) -> None:
    import retain.train.step as step

    real, calls = step.forward, {"n": 0}

    def poisoned(*args, **kwargs):
        outputs, nll_sum = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] >= 3:  # the third micro-batch on: the model produces NaN
            nll_sum = nll_sum * math.nan
        return outputs, nll_sum

    monkeypatch.setattr(step, "forward", poisoned)
    cfg = tiny_config(tmp_path, "name=nan", *SMALL)
    with pytest.raises(ValueError) as err:
        run(cfg)
    message = str(err.value)
    assert "\n" not in message and "non-finite" in message and "step 3" in message
    assert "train.lr" in message and "task 2" in message
    assert not (cfg.run_dir / "adapters" / "task_2").exists(), "nothing after the NaN written"


def test_choosing_among_nan_scores_does_not_crash() -> None:
    from retain.eval.scoring import choose_option

    assert choose_option([math.nan, math.nan])[0] == -1
    assert choose_option([math.nan, -1.0, -2.0]) == (1, False)


# ----------------------------------------------------------------- 2. the YAML alias bomb
def test_an_alias_bomb_in_a_run_config_is_refused_in_a_short_line(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb())
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert len(str(err.value)) < 400 and str(path) in str(err.value)


def test_an_alias_bomb_in_a_run_directory_is_refused(tmp_path: Path) -> None:
    from retain.results.rescore import saved_run_config

    (tmp_path / "config.yaml").write_text(_bomb())
    with pytest.raises(ConfigError) as err:
        saved_run_config(tmp_path)
    assert len(str(err.value)) < 400 and "config.yaml" in str(err.value)


def test_an_alias_bomb_in_a_stream_file_is_refused(tmp_path: Path) -> None:
    from retain.data.stream_file import load_stream_file

    path = tmp_path / "s.yaml"
    path.write_text(_bomb().replace("methods:", "tasks:"))
    with pytest.raises(ValueError) as err:
        load_stream_file(path)
    assert len(str(err.value)) < 400 and str(path) in str(err.value)


def test_a_long_value_is_quoted_as_a_short_excerpt(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.batch_size=" + "x" * 100_000])
    assert len(str(err.value)) < 400


# ----------------------------------------------------------------- 3. --overwrite deletes
def _users_folder(run_dir: Path) -> None:
    (run_dir / "src").mkdir(parents=True)
    (run_dir / "thesis.txt").write_text("years of work")
    (run_dir / "src" / "main.py").write_text("print('mine')")
    (run_dir / "config.yaml").write_text("title: my thesis\nmethods: [chapter1]\n")


def test_overwrite_never_deletes_a_users_files(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, "name=mine", *SMALL)
    _users_folder(cfg.run_dir)
    with pytest.raises(ValueError) as err:
        run(cfg, overwrite=True)
    assert "thesis.txt" in str(err.value)
    assert (cfg.run_dir / "thesis.txt").read_text() == "years of work"
    assert (cfg.run_dir / "src" / "main.py").exists() and (cfg.run_dir / "config.yaml").exists()


def test_overwrite_of_a_run_refuses_a_foreign_file_in_it_by_name(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, "name=run", *SMALL)
    run(cfg)
    (cfg.run_dir / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="notes.txt"):
        run(cfg, overwrite=True)
    assert (cfg.run_dir / "notes.txt").read_text() == "mine"
    assert (cfg.run_dir / "metrics.json").exists(), "nothing of the run deleted either"
    (cfg.run_dir / "notes.txt").unlink()
    result = run(cfg, overwrite=True)
    assert not result.resumed


# ----------------------------------------------------------------- 5. kill in the first checkpoint
class _Killed(BaseException):
    """Stands for SIGKILL: no except clause of the run's own catches it."""


def test_a_kill_during_the_first_checkpoint_write_resumes_without_overwrite(
    tmp_path: Path, monkeypatch, finished_run: FinishedRun
) -> None:
    import retain.train.checkpoint as checkpoint
    import retain.train.resume as resume

    whole = finished_run(*SMALL, name="whole")

    def killed_mid_write(root: Path, state: dict) -> None:
        tmp = Path(root) / "latest.tmp"  # what save_checkpoint leaves when killed mid-write
        tmp.mkdir(parents=True)
        (tmp / checkpoint.TENSORS).write_bytes(b"\x00" * 10)
        raise _Killed

    monkeypatch.setattr(resume, "save_rotating", killed_mid_write)
    cfg = tiny_config(tmp_path, "name=killed", *SMALL)
    with pytest.raises(_Killed):
        run(cfg)
    monkeypatch.undo()
    again = run(cfg)  # the same command, no --overwrite
    assert not again.resumed
    assert (again.run_dir / "scores.csv").read_text() == (whole.run_dir / "scores.csv").read_text()


# ----------------------------------------------------------------- 4. pairing by counts only
def _strip_ids(run_dir: Path) -> None:
    """Rewrite examples.npz as a run written before example ids existed (format 1) would."""
    import numpy as np

    path = run_dir / "examples.npz"
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files if not k.endswith(".ids")}
    arrays["format"] = np.asarray(1)
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def test_runs_scored_on_other_test_examples_are_not_paired(
    tmp_path: Path, capsys, finished_run: FinishedRun
) -> None:
    from retain.results.paired import pair
    from retain.results.report import compare_runs
    from retain.results.view import RunView

    a = finished_run(*SMALL, name="a").run_dir
    b = run(tiny_config(tmp_path, "name=b", *SMALL, "data.subsample_seed=7")).run_dir
    c = run(tiny_config(tmp_path, "name=c", *SMALL, "seed=3")).run_dir  # same examples as a
    pairing = pair(RunView(b), RunView(a))
    assert pairing.differences is None and "other test examples" in str(pairing.reason)
    same = pair(RunView(c), RunView(a))
    assert same.differences is not None and same.note is None
    capsys.readouterr()
    page = compare_runs([a, b], tmp_path / "cmp").read_text()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot be paired" in err[0] and "other test examples" in err[0]
    assert 'class="best"' not in page

    for run_dir in (a, b, c):  # runs written before ids: their fingerprints decide, and say so
        _strip_ids(run_dir)
    assert "test data hashes differ" in str(pair(RunView(b), RunView(a)).reason)
    old = pair(RunView(c), RunView(a))
    assert old.differences is not None and "fingerprints' test-data hashes" in str(old.note)


def test_an_fp16_overflow_the_scaler_skips_is_no_failure() -> None:
    """Inf gradients under a loss scaler are the scaler's to skip; without one they stop the run;
    a NaN loss stops it either way."""
    from types import SimpleNamespace

    import torch

    from retain.train.step import non_finite

    layer = torch.nn.Linear(2, 1)
    layer.weight.grad = torch.full_like(layer.weight, math.inf)

    def trainer(scaler: object) -> SimpleNamespace:
        accelerator = SimpleNamespace(scaler=scaler, num_processes=1)
        return SimpleNamespace(accelerator=accelerator, model=layer, device=torch.device("cpu"))

    finite, nan = {"task": torch.tensor(1.5)}, {"task": torch.tensor(math.nan)}
    assert non_finite(trainer(object()), finite) is None
    assert non_finite(trainer(None), finite) == "gradient norm inf"
    assert non_finite(trainer(object()), nan) == "loss nan"


def test_a_non_finite_per_task_learning_rate_in_a_stream_file_is_refused(tmp_path: Path) -> None:
    from retain.data.stream_file import load_stream_file

    rows = "".join(f'{{"prompt": "q{i}", "answer": "a"}}\n' for i in range(4))
    (tmp_path / "d.jsonl").write_text(rows)
    path = tmp_path / "s.yaml"
    path.write_text("tasks:\n  - {name: qa, train: d.jsonl, test: d.jsonl, format: prompt_answer, "
                    "lr: .inf}\n")
    with pytest.raises(ConfigError, match=r"tasks\[0\]: lr: .*finite"):
        load_stream_file(path)
