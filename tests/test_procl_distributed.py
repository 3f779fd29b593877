"""ProCL and O-LoRA on two CPU processes (gloo, torchrun): parameters that train only in some
tasks do not stall DDP, every rank keeps the same programs, and O-LoRA (no batch-dependent
state) trains exactly like one process with the doubled batch. Two-process runs: scenarios of
the suite's one torchrun launch (tests/torchrun_batch.py); references in this process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.test_distributed import _assert_same_training
from tests.torchrun_batch import Batch, one, records, two

pytestmark = pytest.mark.slow  # torchrun: two processes per run
SCENARIOS = [two(f"pd_{method}", 2, f"methods=[{method}]") for method in ("olora", "procl")]


def test_olora_on_two_processes_matches_one_with_the_doubled_batch(
    tmp_path: Path, torchrun_runs: Batch
) -> None:
    reference = one(tmp_path, "one", 4, "methods=[olora]")
    two_processes = torchrun_runs.run_dir("pd_olora")
    assert (reference / "scores.csv").read_text() == (two_processes / "scores.csv").read_text()
    _assert_same_training(reference, two_processes, tol=1e-4)
    steps = records(two_processes, "step")
    assert all("olora_orth" in r["losses"] for r in steps)


def test_procl_on_two_processes_keeps_every_rank_identical(
    tmp_path: Path, torchrun_runs: Batch
) -> None:
    """Decision (plugin.py): routing averages each rank's rows, so only task 1 (plain LoRA)
    equals the one-process run exactly; consolidation averages T over ranks, so M, W_orig and
    the programs stay identical on both ranks (the loop compares their digests per task)."""
    reference = one(tmp_path, "one", 4, "methods=[procl]")
    two_processes = torchrun_runs.run_dir("pd_procl")
    states = records(two_processes, "rank_state")
    assert len(states) == 3 and all(len(set(r["plugin_digests"])) == 1 for r in states)
    a = load_file(str(reference / "adapters" / "task_1" / "adapter_model.safetensors"))
    b = load_file(str(two_processes / "adapters" / "task_1" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and a
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-4, rtol=0)
    starts = records(two_processes, "procl_task_start")
    assert [r["task"] for r in starts] == [1, 2]
