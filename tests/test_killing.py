"""The kill helper itself: a real SIGKILL must stop every process of the run, ranks included."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import psutil

from tests.killing import kill_during

# A launcher like torchrun: it starts its "rank" in a session of its own and waits for it; the
# rank logs a step record every 20 ms (task index 1 from its third record on) and its pid.
LAUNCHER = """
import subprocess, sys
rank = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], start_new_session=True)
rank.wait()
"""
RANK = """
import json, os, sys, time
from pathlib import Path
run = Path(sys.argv[1])
(run / "rank.pid").write_text(str(os.getpid()))
with open(run / "log.jsonl", "a") as log:
    for n in range(1, 100000):
        log.write(json.dumps({"type": "step", "task": int(n > 2), "task_step": n}) + "\\n")
        log.flush()
        time.sleep(0.02)
"""


def test_a_rank_in_its_own_session_is_killed_with_its_launcher(tmp_path: Path) -> None:
    """Before the fix the launcher's process group was killed and the rank, in a session of
    its own as torchrun's ranks are, trained on: a 'killed' torchrun run finished its tasks."""
    command = [sys.executable, "-c", LAUNCHER, RANK, str(tmp_path)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    kill_during(command, tmp_path, env, task=1, task_step=4)
    rank = int((tmp_path / "rank.pid").read_text())
    gone = not psutil.pid_exists(rank) or psutil.Process(rank).status() == psutil.STATUS_ZOMBIE
    assert gone, "the rank outlived the SIGKILL"
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["task"] == 1
