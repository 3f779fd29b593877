"""Atomic writes stay correct when two writers target the same file at once.

Two `retain bench` processes sharing one bench directory both rewrite `bench.json`; with a fixed
temp name, one process's rename took the other's temp file away and the run died before it
started ("No such file or directory: .bench.json.tmp")."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from retain.storage import files
from retain.storage.examples import ExampleResults
from retain.storage.files import replaced_atomically, write_text_atomic


def interleave_second_writer(monkeypatch: pytest.MonkeyPatch, write) -> None:
    """Make the first atomic rename run a whole second write to the same target first, as a
    second process would between the first writer's temp write and its rename."""
    real_replace = os.replace
    state = {"nested": False}

    def replace(src: str | Path, dst: str | Path) -> None:
        if not state["nested"]:
            state["nested"] = True
            write(Path(dst))
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", replace)


def test_interleaved_text_writes_both_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "bench.json"
    interleave_second_writer(monkeypatch, lambda dst: write_text_atomic(dst, "second"))
    write_text_atomic(target, "first")
    assert target.read_text() == "first"  # the outer writer renamed last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json"]  # no temp file left


def test_interleaved_example_saves_both_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def results(score: float) -> ExampleResults:
        out = ExampleResults()
        out.set(0, "task_a", [score, 1.0], ids=["e0", "e1"])
        return out

    interleave_second_writer(monkeypatch, lambda dst: results(0.0).save(dst))
    path = results(1.0).save(tmp_path)
    assert ExampleResults.load(path).stacked("task_a")[1].tolist() == [[1.0, 1.0]]
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_failed_write_leaves_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "metrics.json"
    write_text_atomic(target, "old")

    def fail(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_text_atomic(target, "new")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_temp_names_are_hidden_beside_the_target_and_unique(tmp_path: Path) -> None:
    target = tmp_path / "bench.json"
    names = set()
    for k in range(100):
        with replaced_atomically(target) as tmp:
            tmp.write_text(str(k))
            names.add(tmp)
    assert len(names) == 100 and target.read_text() == "99"
    assert all(p.parent == tmp_path and p.name.startswith(".bench.json.") for p in names)
