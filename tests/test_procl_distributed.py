"""ProCL and O-LoRA on two CPU processes (gloo, torchrun): parameters that train only in some
tasks do not stall DDP, every rank keeps the same programs, and O-LoRA (no batch-dependent
state) trains exactly like one process with the doubled batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.test_distributed import _assert_same_training, _records, _run

pytestmark = pytest.mark.slow  # torchrun: two processes per run


def test_olora_on_two_processes_matches_one_with_the_doubled_batch(tmp_path: Path) -> None:
    one = _run(tmp_path, "one", 1, 4, "methods=[olora]")
    two = _run(tmp_path, "two", 2, 2, "methods=[olora]")
    assert (one / "scores.csv").read_text() == (two / "scores.csv").read_text()
    _assert_same_training(one, two, tol=1e-4)
    steps = _records(two, "step")
    assert all("olora_orth" in r["losses"] for r in steps)


def test_procl_on_two_processes_keeps_every_rank_identical(tmp_path: Path) -> None:
    """Decision (plugin.py): routing averages each rank's rows, so only task 1 (plain LoRA)
    equals the one-process run exactly; consolidation averages T over ranks, so M, W_orig and
    the programs stay identical on both ranks (the loop compares their digests per task)."""
    one = _run(tmp_path, "one", 1, 4, "methods=[procl]")
    two = _run(tmp_path, "two", 2, 2, "methods=[procl]")
    states = _records(two, "rank_state")
    assert len(states) == 3 and all(len(set(r["plugin_digests"])) == 1 for r in states)
    a = load_file(str(one / "adapters" / "task_1" / "adapter_model.safetensors"))
    b = load_file(str(two / "adapters" / "task_1" / "adapter_model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-4, rtol=0)
    starts = _records(two, "procl_task_start")
    assert [r["task"] for r in starts] == [1, 2]
