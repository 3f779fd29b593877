"""Kill a run in mid-task, as a crash would: the helpers behind every kill-and-resume test.

One real SIGKILL per launcher (`kill_during`: of a plain `python -m retain` process in
test_engine, of torchrun in tests/torchrun_launch.py for test_distributed); every other exact
resume is checked in-process (`crash_at`, `whole_beside_crashed_and_resumed`): the run dies by
an exception no except clause catches just before a chosen checkpoint, and the same command is
started again in the same process.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil


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
    """Start `command`, SIGKILL it with every process it started once the run has logged
    step `task_step` of task index `task`, and check it died there, before finishing.

    The whole process tree is killed, not just the process group: torchrun starts each rank in
    a session of its own (torch's elastic `SubprocessHandler`), so killing the launcher's
    group alone left the ranks training on to the end of the run."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        steps = step_records(run_dir)
        if steps and steps[-1]["task"] == task and steps[-1]["task_step"] >= task_step:
            break
        time.sleep(0.05)
    tree = [psutil.Process(proc.pid)]
    with contextlib.suppress(psutil.NoSuchProcess):
        tree += tree[0].children(recursive=True)
    for member in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.send_signal(signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(tree, timeout=30)
    assert not alive, f"still running after SIGKILL: {alive}"
    assert not (Path(run_dir) / "metrics.json").exists(), "killed too late to test resume"
    last = step_records(run_dir)[-1]
    assert last["task"] == task, f"killed in task {last['task']}, not {task}: too late"


class Crash(BaseException):
    """Stands for SIGKILL: neither the run's own except clauses nor the CLI's catch it."""


@contextmanager
def crash_at(task: int, step: int) -> Iterator[None]:
    """Within the block, a run dies just before it would write the mid-task checkpoint of
    `task` (index) at task step `step` or later: it trained past its last checkpoint, as a run
    SIGKILLed at that step did."""
    from retain.train import loop

    save = loop.ContinualTrainer.save

    def save_or_die(self: loop.ContinualTrainer, t: int, s: int, phase: str) -> None:
        if phase == "train" and t == task and s >= step:
            raise Crash(f"crashed in task {t} at step {s}")
        save(self, t, s, phase)

    loop.ContinualTrainer.save = save_or_die  # type: ignore[method-assign]
    try:
        yield
    finally:
        loop.ContinualTrainer.save = save  # type: ignore[method-assign]


def run_cli(args: list[str]) -> str:
    """`retain ARGS` in this process; its output (the command must succeed)."""
    from typer.testing import CliRunner

    from retain.cli import app

    done = CliRunner().invoke(app, args, catch_exceptions=False)
    assert done.exit_code == 0, done.output
    return done.output


def whole_beside_crashed_and_resumed(
    args_for: Callable[[str], list[str]], parent: Path, task: int = 1, step: int = 6
) -> str:
    """`retain ARGS` uninterrupted (`args_for("whole")`), then `args_for("killed")` crashed
    by `crash_at(task, step)` and started again, all in this process; the resumed run's output.
    The defaults match `kill_during`'s: killed after step 5 of task index 1, with checkpoints
    every 2 steps."""
    run_cli(args_for("whole"))
    with crash_at(task, step):
        try:
            run_cli(args_for("killed"))
        except Crash:
            pass
        else:
            raise AssertionError("the run finished before the crash: test resume elsewhere")
    assert not (Path(parent) / "killed" / "metrics.json").exists()
    return run_cli(args_for("killed"))
