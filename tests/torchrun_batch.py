"""Every two-process (torchrun) scenario of the suite in one launch, shared by all tests.

Each torchrun test module lists the runs it needs in a module-level `SCENARIOS` (built with
`two`, `guard`, `shards`); the session fixture `torchrun_runs` gathers the scenarios of the
modules that have a selected test and starts tests/scenario_worker.py once under torchrun for
all of them, so the ranks' start-up (seconds of CPU each) is paid once, not per run. Under
pytest-xdist the workers share that one launch (pytest-xdist's documented pattern: a folder in
the session's common temporary directory and a file lock). Tests then only read run folders.
One-process references run in the pytest process (`one`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from tests.killing import kill_during
from tests.test_engine import TINY

BASE = [*TINY, "data.num_tasks=3", "model.lora.dropout=0.0", "train.steps_per_task=4",
        "replay.interval_units=0"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
WORKER = str(Path(__file__).with_name("scenario_worker.py"))
LAUNCH_TIMEOUT = 900  # a hung rank (a collective only one rank entered) fails the tests
GENERAL = "general.jsonl"  # general text for GeRe, written beside the runs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun(*args: str) -> list[str]:
    """A two-process torchrun command line (`args`: the script or `-m module` and its args)."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
            "--master_addr=127.0.0.1", f"--master_port={free_port()}", *args]


def records(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def write_general(folder: Path) -> Path:
    """Nine short general-text rows (JSONL) for GeRe's tests."""
    source = folder / GENERAL
    text = [f"Note {i}: the {'quiet ' * (i % 3)}harbour fills with boats." for i in range(9)]
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in text))
    return source


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


def _sigkill(out: Path, scenario: dict[str, Any]) -> None:
    task, task_step = scenario["sigkill"]
    args = [a.replace("{out}", str(out)) for a in scenario["args"]]
    command = torchrun("-m", "retain", "run", "/dev/null", *args, f"output_dir={out}",
                       f"name={scenario['name']}")
    kill_during(command, out / scenario["name"], ENV, task=task, task_step=task_step,
                timeout=240)


def launch(out: Path, scenarios: list[dict[str, Any]]) -> None:
    """The real SIGKILLs first (one launch each), then every scenario in one launch; the
    launch's exit code and output tail go to `out/launch.json` (written last)."""
    out.mkdir(parents=True, exist_ok=True)
    write_general(out)
    for scenario in scenarios:
        if scenario.get("sigkill"):
            _sigkill(out, scenario)
    plan = out / "plan.json"
    plan.write_text(json.dumps({"out": str(out), "scenarios": scenarios}, indent=1))
    try:
        done = subprocess.run(torchrun(WORKER, str(plan)), env=ENV, capture_output=True,
                              text=True, timeout=LAUNCH_TIMEOUT)
        result = {"returncode": done.returncode, "output": (done.stdout + done.stderr)[-5000:]}
    except subprocess.TimeoutExpired as exc:
        result = {"returncode": "timeout", "output": str(exc)}
    (out / "launch.json").write_text(json.dumps(result))


def _selected_scenarios(session: pytest.Session) -> list[dict[str, Any]]:
    """The scenarios of the modules with a selected test, each name once (in module order)."""
    chosen: dict[str, dict[str, Any]] = {}
    for module in dict.fromkeys(item.module for item in session.items
                                if getattr(item, "module", None)):
        for scenario in getattr(module, "SCENARIOS", []):
            known = chosen.setdefault(scenario["name"], scenario)
            if known != scenario:
                raise ValueError(f"{module.__name__}: scenario {scenario['name']!r} is defined "
                                 "twice with different settings")
    return list(chosen.values())


@pytest.fixture(scope="session")
def torchrun_runs(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> Batch:
    """The one launch of every selected torchrun scenario, shared by all xdist workers."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, common to its workers
    out = root / "torchrun-batch"
    with FileLock(str(root / "torchrun-batch.lock")):
        if not (out / "launch.json").exists():
            launch(out, _selected_scenarios(request.session))
    return Batch(out)
