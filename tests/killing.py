"""Kill a run in mid-task, as a crash would: the helper behind every kill-and-resume test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


def step_records(run_dir: Path) -> list[dict]:
    """The `step` records of a run's log so far (none before the log exists)."""
    path = Path(run_dir) / "log.jsonl"
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if '"type": "step"' in x]


def kill_during(
    command: list[str],
    run_dir: Path,
    env: dict[str, str],
    task: int = 1,
    task_step: int = 5,
    timeout: float = 180.0,
) -> None:
    """Start `command`, SIGKILL it (with every process it started) once the run has logged
    step `task_step` of task index `task`, and check it died before finishing."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        steps = step_records(run_dir)
        if steps and steps[-1]["task"] == task and steps[-1]["task_step"] >= task_step:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (Path(run_dir) / "metrics.json").exists(), "killed too late to test resume"


def whole_beside_killed_and_resumed(
    command_for: Callable[[str], list[str]], parent: Path, env: dict[str, str], **kill: float
) -> subprocess.CompletedProcess:
    """Run `command_for("whole")` uninterrupted while `command_for("killed")` is killed mid-task
    (see `kill_during`) and started again, both under `parent`.

    The two runs share nothing, so they overlap: the test costs about one run's wall-clock on
    two cores instead of two. Returns the resumed process, checked to have finished.
    """
    log = Path(parent) / "whole.stderr"
    with log.open("w") as stderr:
        whole = subprocess.Popen(command_for("whole"), env=env, stdout=subprocess.DEVNULL,
                                 stderr=stderr)
        try:
            kill_during(command_for("killed"), Path(parent) / "killed", env, **kill)
            resumed = subprocess.run(command_for("killed"), env=env, capture_output=True,
                                     text=True)
        finally:
            whole.wait()
    assert whole.returncode == 0, log.read_text()
    assert resumed.returncode == 0, resumed.stderr
    return resumed
