"""The run directory: one process at a time, and files that are not ours are never clobbered."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retain.storage.rundir import (
    RunDirError,
    RunLock,
    clear_run_dir,
    ensure_run_dir,
    refuse_foreign_files,
)

HOLD = """
import sys, time
from pathlib import Path
from retain.storage.rundir import RunLock
lock = RunLock(Path(sys.argv[1])).acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_a_second_process_is_refused_and_told_who_holds_the_lock(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError) as err:
            RunLock(run_dir).acquire()
        message = str(err.value)
        assert f"pid {holder.pid}" in message and socket.gethostname() in message
        assert str(run_dir) in message and "\n" not in message
    finally:
        holder.kill()
        holder.wait()
    # the holder died: its lock went with it, and a new run may start
    lock = RunLock(run_dir).acquire()
    lock.release()


def test_the_lock_is_exclusive_within_one_process_too(tmp_path: Path) -> None:
    first = RunLock(tmp_path).acquire()
    with pytest.raises(RunDirError, match="in use by pid"):
        RunLock(tmp_path).acquire()
    first.release()
    RunLock(tmp_path).acquire().release()


def test_a_forgotten_lock_object_is_collected_before_refusing(tmp_path: Path) -> None:
    class Owner:
        def __init__(self) -> None:
            self.me = self  # a reference cycle: only the cyclic collector frees it
            self.lock = RunLock(tmp_path).acquire()

    Owner()
    RunLock(tmp_path).acquire().release()


def test_an_output_dir_that_is_a_file_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "runs"
    blocker.write_text("not a folder")
    with pytest.raises(RunDirError) as err:
        ensure_run_dir(blocker / "x")
    assert str(blocker) in str(err.value) and "output_dir" in str(err.value)
    with pytest.raises(RunDirError, match="is a file"):
        ensure_run_dir(blocker)


def test_files_that_are_no_run_are_never_overwritten(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "scores.csv").write_text("stage,a\n0,1\n")
    with pytest.raises(RunDirError) as err:
        refuse_foreign_files(run_dir)
    assert "no config.yaml" in str(err.value) and str(run_dir) in str(err.value)
    assert (run_dir / "scores.csv").exists()


def _write_run_config(run_dir: Path) -> None:
    """The config.yaml a run writes first (a resolved run config)."""
    (run_dir / "config.yaml").write_text("name: run\noutput_dir: x\nmethods: [sequential]\n"
                                         "model: {}\ndata: {}\ntrain: {}\n")


def test_a_start_that_never_reached_its_first_checkpoint_may_be_reused(tmp_path: Path) -> None:
    """A model that failed to load leaves the config and an empty log: nothing to lose."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _write_run_config(run_dir)
    (run_dir / "log.jsonl").write_text("")
    (run_dir / ".lock").write_text("")
    refuse_foreign_files(run_dir)
    (run_dir / "work").mkdir()  # a plugin's files rebuilt on a fresh start (GeRe's caches)
    (run_dir / "work" / "gere_states.rank0.u8").write_bytes(b"\x00")
    refuse_foreign_files(run_dir)
    (run_dir / "log.jsonl").write_text('{"type": "eval", "stage": 0}\n')
    (run_dir / "scores.csv").write_text("stage,a\n0,1\n")  # row 0: recomputed by a new start
    (run_dir / "checkpoints" / "latest.tmp").mkdir(parents=True)  # killed in the first save
    (run_dir / ".examples.npz.4242.0a1b2c3d4e5f.tmp").write_bytes(b"PK")  # killed mid-replace
    refuse_foreign_files(run_dir)
    (run_dir / ".notes.txt.4242.0a1b2c3d4e5f.tmp").write_text("no file of a run")
    with pytest.raises(RunDirError, match="notes.txt"):
        refuse_foreign_files(run_dir)
    (run_dir / ".notes.txt.4242.0a1b2c3d4e5f.tmp").unlink()
    (run_dir / "metrics.json").write_text("{}")  # results of a run past its first checkpoint
    with pytest.raises(RunDirError, match="--overwrite"):
        refuse_foreign_files(run_dir)


def test_clearing_keeps_only_the_lock_and_refuses_a_folder_that_is_no_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints" / "latest").mkdir(parents=True)
    (run_dir / "config.yaml").write_text("name: run\nmethods: []\nmodel: {}\ntrain: {}\n")
    (run_dir / "scores.csv").write_text("x")
    lock = RunLock(run_dir).acquire()
    assert clear_run_dir(run_dir) == 3
    assert [p.name for p in run_dir.iterdir()] == [".lock"]
    lock.release()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(RunDirError, match="thesis.tex"):
        clear_run_dir(mine)
    assert (mine / "thesis.tex").exists()


def test_release_lets_the_next_run_in_at_once(tmp_path: Path) -> None:
    start = time.perf_counter()
    for _ in range(3):
        RunLock(tmp_path).acquire().release()
    assert time.perf_counter() - start < 5


def test_someone_elses_config_yaml_is_not_taken_for_an_unfinished_start(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("my: own settings\n")
    with pytest.raises(RunDirError, match="no retain run config"):
        refuse_foreign_files(tmp_path)
    with pytest.raises(RunDirError, match="deletes nothing"):
        clear_run_dir(tmp_path)
    assert (tmp_path / "config.yaml").exists()


@pytest.mark.parametrize("progress", ["scores", "log"])
def test_a_run_past_its_first_task_is_not_reused_though_its_checkpoints_are_gone(
    tmp_path: Path, progress: str
) -> None:
    """Results committed without weights (checkpoints and adapters left out of git, no
    metrics.json yet) hold rows a new start would lose: they are not silently rewritten."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _write_run_config(run_dir)
    (run_dir / "scores.csv").write_text("stage,a,b\n0,1.0,2.0\n1,,\n2,,\n")
    (run_dir / "log.jsonl").write_text('{"type": "eval", "stage": 0}\n{"type": "step"}\n')
    refuse_foreign_files(run_dir)  # row 0 and a few steps only: a new start loses nothing
    if progress == "scores":
        (run_dir / "scores.csv").write_text("stage,a,b\n0,1.0,2.0\n1,92.0,\n2,,\n")
    else:
        with (run_dir / "log.jsonl").open("a") as log:
            log.write('{"type": "task_end", "task": 1}\n')
    with pytest.raises(RunDirError, match="--overwrite") as err:
        refuse_foreign_files(run_dir)
    assert str(run_dir) in str(err.value)
