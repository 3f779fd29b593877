"""Two CPU processes (gloo, started by torchrun) train and evaluate exactly like one process
with the doubled batch: same rows, same replay, same scores; a killed 2-process run resumes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.killing import kill_during
from tests.test_engine import TINY

pytestmark = pytest.mark.slow  # torchrun: two processes per run
BASE = [*TINY, "data.num_tasks=3", "model.lora.dropout=0.0", "train.steps_per_task=4",
        "replay.interval_units=0"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _command(out: Path, name: str, processes: int, batch: int, *extra: str) -> list[str]:
    args = ["-m", "retain", "run", "/dev/null", *BASE, f"output_dir={out}", f"name={name}",
            f"train.batch_size={batch}", *extra]
    if processes == 1:
        return [sys.executable, *args]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
            "--master_addr=127.0.0.1", f"--master_port={_free_port()}", *args]


def _run(out: Path, name: str, processes: int, batch: int, *extra: str) -> Path:
    done = subprocess.run(_command(out, name, processes, batch, *extra), env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / name


def _records(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def _assert_same_training(one: Path, two: Path, tol: float) -> None:
    a, b = _records(one, "step"), _records(two, "step")
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        assert (x["samples"], x["tokens"], x["replayed"]) == (y["samples"], y["tokens"],
                                                              y["replayed"])
        assert x["lr"] == y["lr"]  # the schedule counts global steps
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-4)
    strip = ("seconds",)
    events = [[{k: v for k, v in r.items() if k not in strip} for r in _records(d, "replay_event")]
              for d in (one, two)]
    assert events[0] == events[1]
    for t in range(1, 4):
        wa = load_file(str(one / "adapters" / f"task_{t}" / "adapter_model.safetensors"))
        wb = load_file(str(two / "adapters" / f"task_{t}" / "adapter_model.safetensors"))
        assert wa.keys() == wb.keys()
        for k in wa:
            torch.testing.assert_close(wa[k], wb[k], atol=tol, rtol=0)


def test_one_step_on_two_processes_equals_one_step_on_the_whole_batch(tmp_path: Path) -> None:
    extra = ("data.num_tasks=1", "train.steps_per_task=1", "train.warmup_ratio=0.0")
    one = _run(tmp_path, "one", 1, 8, *extra)
    two = _run(tmp_path, "two", 2, 4, *extra)
    a = load_file(str(one / "adapters" / "task_1" / "adapter_model.safetensors"))
    b = load_file(str(two / "adapters" / "task_1" / "adapter_model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=0)
    assert any(float(v.abs().max()) > 0 for k, v in a.items() if "lora_B" in k)


@pytest.mark.parametrize("method", ["fixed", "mssr"])
def test_two_processes_match_one_with_the_doubled_batch(tmp_path: Path, method: str) -> None:
    one = _run(tmp_path, "one", 1, 4, f"methods=[{method}]")
    two = _run(tmp_path, "two", 2, 2, f"methods=[{method}]")
    assert (one / "scores.csv").read_text() == (two / "scores.csv").read_text()
    # 12 Adam steps amplify gloo's other summation order a little beyond one step's 1e-5
    _assert_same_training(one, two, tol=1e-4)
    assert sum(r["replayed"] for r in _records(two, "step")) > 0
    states = _records(two, "rank_state")
    assert len(states) == 3 and all(len(set(r["plugin_digests"])) == 1 for r in states)
    assert all(len(r["plugin_digests"]) == 2 for r in states)
    scoring = json.loads((two / "metrics.json").read_text())["scoring"]
    # the built-in stream has generated answers: greedy generation ran under two processes
    assert any(s["decoding"]["scoring"] == "greedy" for s in scoring.values())
    assert {"arithmetic", "capital_lookup"} <= set(scoring)


def test_killed_two_process_run_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    extra = ("methods=[mssr]", "train.steps_per_task=8", "train.checkpoint_every=2")
    whole = _run(tmp_path, "whole", 2, 2, *extra)
    kill_during(_command(tmp_path, "killed", 2, 2, *extra), tmp_path / "killed", ENV,
                task_step=3, timeout=240)
    resumed = _run(tmp_path, "killed", 2, 2, *extra)
    assert (whole / "scores.csv").read_text() == (resumed / "scores.csv").read_text()
    _assert_same_training(whole, resumed, tol=0.0)


def test_an_accelerator_spanning_one_of_two_launched_processes_is_refused() -> None:
    """Under torchrun on a machine without GPUs, `Accelerator()` (no `cpu=True`) spans one
    process per rank: every rank would train alone. retain's guard refuses it and names the fix;
    `Accelerator(cpu=True)` spans both and passes."""
    worker = str(Path(__file__).with_name("fsdp_worker.py"))
    for kind, ok in (("default", False), ("cpu", True)):
        done = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
             "--master_addr=127.0.0.1", f"--master_port={_free_port()}", worker, "guard", kind],
            env=ENV, capture_output=True, text=True, timeout=180,
        )
        if ok:
            assert done.returncode == 0, done.stderr[-3000:]
            assert done.stdout.count("accepted: 2 processes") == 2
        else:
            assert done.returncode != 0
            assert "WORLD_SIZE=2" in done.stderr and "Accelerator spans 1" in done.stderr
            assert "cpu=" in done.stderr  # the fix is named
            assert "accepted" not in done.stdout


def test_the_guard_reads_the_launchers_world_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from retain.train.distributed import check_process_count

    one = SimpleNamespace(num_processes=1)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    check_process_count(one)  # type: ignore[arg-type]  # no launcher: nothing to check
    monkeypatch.setenv("WORLD_SIZE", "1")
    check_process_count(one)  # type: ignore[arg-type]
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(RuntimeError, match="started 4 processes.*spans 1"):
        check_process_count(one)  # type: ignore[arg-type]
    monkeypatch.setenv("WORLD_SIZE", "four")
    with pytest.raises(ValueError, match="WORLD_SIZE='four'"):
        check_process_count(one)  # type: ignore[arg-type]
