"""The suite's batched torchrun launch, run in its own light process (no torch import here):

    python -m tests.torchrun_launch DIR

reads DIR/plan.json (written by tests/torchrun_batch.py), first SIGKILLs the scenarios that ask
for it (one torchrun launch each: the suite's real SIGKILL of torchrun), then starts
tests/scenario_worker.py once under torchrun for every scenario, and writes DIR/launch.json
(exit code and output tail) last: tests wait for that file.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

from tests.killing import kill_during, step_records

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


def write_general(folder: Path) -> Path:
    """Nine short general-text rows (JSONL) for GeRe's tests."""
    source = folder / GENERAL
    text = [f"Note {i}: the {'quiet ' * (i % 3)}harbour fills with boats." for i in range(9)]
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in text))
    return source


def _sigkill(out: Path, scenario: dict[str, Any]) -> None:
    task, task_step = scenario["sigkill"]
    args = [a.replace("{out}", str(out)) for a in scenario["args"]]
    command = torchrun("-m", "retain", "run", "/dev/null", *args, f"output_dir={out}",
                       f"name={scenario['name']}")
    kill_during(command, out / scenario["name"], ENV, task=task, task_step=task_step,
                timeout=240)
    last = step_records(out / scenario["name"])[-1]  # where the run stood when killed
    (out / f"{scenario['name']}.killed.json").write_text(json.dumps(last))


def launch(out: Path) -> dict[str, Any]:
    """The real SIGKILLs, then every scenario of `out/plan.json` in one launch."""
    plan = out / "plan.json"
    write_general(out)
    for scenario in json.loads(plan.read_text())["scenarios"]:
        if scenario.get("sigkill"):
            _sigkill(out, scenario)
    try:
        done = subprocess.run(torchrun(WORKER, str(plan)), env=ENV, capture_output=True,
                              text=True, timeout=LAUNCH_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        return {"returncode": "timeout", "output": str(exc)}
    return {"returncode": done.returncode, "output": (done.stdout + done.stderr)[-5000:]}


def main(out: Path) -> None:
    try:
        result = launch(out)
    except BaseException:
        result = {"returncode": "launcher failed", "output": traceback.format_exc()}
        raise
    finally:
        (out / "launch.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
