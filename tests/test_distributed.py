"""Two CPU processes (gloo, started by torchrun) train and evaluate exactly like one process
with the doubled batch: same rows, same replay, same scores; a killed 2-process run resumes.

The two-process runs are scenarios of the suite's one torchrun launch (tests/torchrun_batch.py);
the one-process references run in this process.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.torchrun_batch import ENV, Batch, guard, one, records, torchrun, two

pytestmark = pytest.mark.slow  # torchrun: two processes per run
KILLED = ("methods=[mssr]", "train.steps_per_task=8", "train.checkpoint_every=2")
ONE_STEP = ("data.num_tasks=1", "train.steps_per_task=1", "train.warmup_ratio=0.0")
SCENARIOS = [
    two("dist_one_step", 4, *ONE_STEP),
    two("dist_fixed", 2, "methods=[fixed]"),
    two("dist_mssr", 2, "methods=[mssr]"),
    two("dist_whole", 2, *KILLED),
    # the suite's one real SIGKILL of torchrun: killed after task 2's step 3, resumed
    two("dist_killed", 2, *KILLED, sigkill=(1, 3)),
    guard("dist_guard"),
]


def _assert_same_training(one: Path, two: Path, tol: float) -> None:
    a, b = records(one, "step"), records(two, "step")
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        assert (x["samples"], x["tokens"], x["replayed"]) == (y["samples"], y["tokens"],
                                                              y["replayed"])
        assert x["lr"] == y["lr"]  # the schedule counts global steps
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-4)
    strip = ("seconds",)
    events = [[{k: v for k, v in r.items() if k not in strip} for r in records(d, "replay_event")]
              for d in (one, two)]
    assert events[0] == events[1]
    for t in range(1, 4):
        wa = load_file(str(one / "adapters" / f"task_{t}" / "adapter_model.safetensors"))
        wb = load_file(str(two / "adapters" / f"task_{t}" / "adapter_model.safetensors"))
        assert wa.keys() == wb.keys()
        for k in wa:
            torch.testing.assert_close(wa[k], wb[k], atol=tol, rtol=0)


def test_one_step_on_two_processes_equals_one_step_on_the_whole_batch(
    tmp_path: Path, torchrun_runs: Batch
) -> None:
    reference = one(tmp_path, "one", 8, *ONE_STEP)
    two_processes = torchrun_runs.run_dir("dist_one_step")
    a = load_file(str(reference / "adapters" / "task_1" / "adapter_model.safetensors"))
    b = load_file(str(two_processes / "adapters" / "task_1" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and a
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=0)
    assert any(float(v.abs().max()) > 0 for k, v in a.items() if "lora_B" in k)


@pytest.mark.parametrize("method", ["fixed", "mssr"])
def test_two_processes_match_one_with_the_doubled_batch(
    tmp_path: Path, torchrun_runs: Batch, method: str
) -> None:
    reference = one(tmp_path, "one", 4, f"methods=[{method}]")
    two_processes = torchrun_runs.run_dir(f"dist_{method}")
    assert (reference / "scores.csv").read_text() == (two_processes / "scores.csv").read_text()
    # 12 Adam steps amplify gloo's other summation order a little beyond one step's 1e-5
    _assert_same_training(reference, two_processes, tol=1e-4)
    assert sum(r["replayed"] for r in records(two_processes, "step")) > 0
    states = records(two_processes, "rank_state")
    assert len(states) == 3 and all(len(set(r["plugin_digests"])) == 1 for r in states)
    assert all(len(r["plugin_digests"]) == 2 for r in states)
    scoring = json.loads((two_processes / "metrics.json").read_text())["scoring"]
    # the built-in stream has generated answers: greedy generation ran under two processes
    assert any(s["decoding"]["scoring"] == "greedy" for s in scoring.values())
    assert {"arithmetic", "capital_lookup"} <= set(scoring)


def test_killed_two_process_run_resumes_to_the_uninterrupted_result(
    torchrun_runs: Batch,
) -> None:
    """`dist_killed` was SIGKILLed under torchrun (its own launch, tests/killing.py checks it
    had not finished) and resumed in the batched launch."""
    whole = torchrun_runs.run_dir("dist_whole")
    resumed = torchrun_runs.run_dir("dist_killed")
    assert torchrun_runs.result("dist_killed")["resumed"]
    killed_at = json.loads((torchrun_runs.out / "dist_killed.killed.json").read_text())
    assert killed_at["task"] == 1 and 3 <= killed_at["task_step"] < 8  # in mid task 2
    assert (whole / "scores.csv").read_text() == (resumed / "scores.csv").read_text()
    _assert_same_training(whole, resumed, tol=0.0)


def test_an_accelerator_spanning_one_of_two_launched_processes_is_refused(
    torchrun_runs: Batch,
) -> None:
    """Under torchrun on a machine without GPUs, `Accelerator()` (no `cpu=True`) spans one
    process per rank: every rank would train alone. retain's guard refuses it and names the fix
    (its own launch: the ranks fail); `Accelerator(cpu=True)` spans both and passes (in the
    batched launch)."""
    for rank in (0, 1):
        assert torchrun_runs.result("dist_guard", rank)["accepted"] == 2
    worker = str(Path(__file__).with_name("fsdp_worker.py"))
    done = subprocess.run(torchrun(worker, "guard", "default"), env=ENV, capture_output=True,
                          text=True, timeout=180)
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
