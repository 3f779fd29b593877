"""Every two-process (torchrun) scenario of the suite in one launch, shared by all tests.

Each torchrun test module lists the runs it needs in a module-level `SCENARIOS` (built with
`two`, `guard`, `shards`). At the session's first test, `_torchrun_launch` gathers the
scenarios of the modules that have a selected test and starts tests/torchrun_launch.py in the
background: tests/scenario_worker.py under torchrun once for all of them, so the ranks' start-up
(seconds of CPU each) is paid once, not per run, and other tests run meanwhile. Under
pytest-xdist the workers share that one launch (pytest-xdist's documented pattern: a folder in
the session's common temporary directory and a file lock). A test asks for `torchrun_runs`,
which waits for the launch, and only reads run folders; one-process references run in the
pytest process (`one`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from tests.test_engine import TINY
from tests.torchrun_launch import ENV, GENERAL, LAUNCH_TIMEOUT, torchrun, write_general

__all__ = ["ENV", "GENERAL", "torchrun", "write_general"]
BASE = [*TINY, "data.num_tasks=3", "model.lora.dropout=0.0", "train.steps_per_task=4",
        "replay.interval_units=0"]
ROOT = Path(__file__).resolve().parents[1]
WAIT = LAUNCH_TIMEOUT + 300  # the launch, and the real SIGKILL's launches before it


def records(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def overrides(batch: int, *extra: str) -> list[str]:
    return [*BASE, f"train.batch_size={batch}", *extra]


def one(out: Path, name: str, batch: int, *extra: str) -> Path:
    """`retain run` on one process, in this process (`{out}` in `extra` stands for `out`)."""
    from retain.config import load_config
    from retain.train.loop import run

    args = [a.replace("{out}", str(out)) for a in overrides(batch, *extra)]
    config = load_config(Path("/dev/null"), [*args, f"output_dir={out}", f"name={name}"])
    return run(config).run_dir


def two(name: str, batch: int, *extra: str, crash: tuple[int, int] | None = None,
        sigkill: tuple[int, int] | None = None) -> dict[str, Any]:
    """A two-process run of `overrides(batch, *extra)` named `name`. `crash=(task, step)`: it
    first dies in-process before that checkpoint and is resumed in the same ranks;
    `sigkill=(task, task_step)`: it is first started alone under torchrun and SIGKILLed once it
    logged that step (tests/killing.py), and the launch resumes it."""
    return {"name": name, "kind": "run", "args": overrides(batch, *extra),
            "crash": list(crash) if crash else None, "sigkill": list(sigkill) if sigkill else None}


def guard(name: str) -> dict[str, Any]:
    return {"name": name, "kind": "guard"}


def shards(name: str) -> dict[str, Any]:
    return {"name": name, "kind": "shards"}


class Batch:
    """The launch's folder: `run_dir(name)` once both ranks finished scenario `name`."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def result(self, name: str, rank: int = 0) -> dict[str, Any]:
        """Scenario `name`'s result on `rank`; fails with its traceback (or the launch's
        output) if either rank did not finish it."""
        for r in (0, 1):
            error = self.out / f"{name}.rank{r}.error"
            if error.exists():
                raise AssertionError(f"scenario {name} failed on rank {r}:\n{error.read_text()}")
            if not (self.out / f"{name}.rank{r}.json").exists():
                launch = json.loads((self.out / "launch.json").read_text())
                raise AssertionError(f"scenario {name} did not finish on rank {r}; the launch "
                                     f"exited {launch['returncode']}:\n{launch['output']}")
        return json.loads((self.out / f"{name}.rank{rank}.json").read_text())

    def run_dir(self, name: str) -> Path:
        assert self.result(name)["ok"]
        return self.out / name


def _selected_scenarios(session: pytest.Session) -> list[dict[str, Any]]:
    """The scenarios of the modules with a selected test that asks for `torchrun_runs`, each
    name once (in module order)."""
    chosen: dict[str, dict[str, Any]] = {}
    for module in dict.fromkeys(item.module for item in session.items  # type: ignore[attr-defined]
                                if "torchrun_runs" in getattr(item, "fixturenames", ())):
        for scenario in getattr(module, "SCENARIOS", []):
            known = chosen.setdefault(scenario["name"], scenario)
            if known != scenario:
                raise ValueError(f"{module.__name__}: scenario {scenario['name']!r} is defined "
                                 "twice with different settings")
    return list(chosen.values())


def _folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's folder: under xdist the parent of the worker's, common to all workers."""
    root = tmp_path_factory.getbasetemp()
    return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


@pytest.fixture(scope="session", autouse=True)
def _torchrun_launch(request: pytest.FixtureRequest,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The first worker to start a test starts the launch in the background (if a torchrun
    test is selected) and, at its session's end, waits for it (Ctrl-C reaches it too: same
    process group)."""
    root = _folder(tmp_path_factory)
    out = root / "torchrun-batch"
    started = None
    with FileLock(str(root / "torchrun-batch.lock")):
        if not out.exists():
            out.mkdir()
            scenarios = _selected_scenarios(request.session)
            if scenarios:
                plan = {"out": str(out), "scenarios": scenarios}
                (out / "plan.json").write_text(json.dumps(plan, indent=1))
                with (out / "launcher.log").open("w") as log:
                    started = subprocess.Popen(
                        [sys.executable, "-m", "tests.torchrun_launch", str(out)], cwd=ROOT,
                        env=ENV, stdout=log, stderr=subprocess.STDOUT)
    yield
    if started is not None:
        try:
            started.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            started.kill()


@pytest.fixture(scope="session")
def torchrun_runs(_torchrun_launch: None, tmp_path_factory: pytest.TempPathFactory) -> Batch:
    """The batched launch of every selected torchrun scenario, once it has finished."""
    out = _folder(tmp_path_factory) / "torchrun-batch"
    deadline = time.monotonic() + WAIT
    while not (out / "launch.json").exists():
        log = out / "launcher.log"
        assert time.monotonic() < deadline, "the torchrun launch did not finish:\n" + (
            log.read_text()[-3000:] if log.exists() else "(no launcher.log)")
        time.sleep(0.5)
    return Batch(out)
