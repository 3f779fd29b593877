"""EWC and LwF under `train.sharding=fsdp2` on two CPU processes (gloo, torchrun): the same
trainable weights, losses and EWC state as one process with the same global batch, identical
plugin state on both ranks, and a crashed sharded EWC run resuming bit for bit.

Six runs of the tiny model (2 tasks of 4 steps, 2 test rows a task): two one-process runs in
this process, four two-process runs (one crashed in-process and resumed in the same ranks) in
the suite's one torchrun launch (tests/torchrun_batch.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from retain.train.checkpoint import read_checkpoint
from tests.test_fsdp import FSDP, _assert_same_training, crashed_and_resumed
from tests.torchrun_batch import Batch, one, records, two

pytestmark = pytest.mark.slow  # torchrun: two processes per run
SHORT = ("data.num_tasks=2", "train.steps_per_task=4", "train.warmup_ratio=0.0",
         "data.max_test_per_task=2")
EWC = ("methods=[fixed,ewc]", "ewc.weight=1000", "train.checkpoint_every=1")
LWF = "methods=[lwf]"
SCENARIOS = [
    two("freg_ewc", 2, *SHORT, *EWC, FSDP),
    # dies in task 2 as it is about to save step 3
    two("freg_ewc_crashed", 2, *SHORT, *EWC, FSDP, crash=(1, 3)),
    two("freg_lwf", 2, *SHORT, LWF, FSDP),
]


def _plugin_state(run_dir: Path, name: str) -> dict:
    """The plugin's state in the run's newest checkpoint (after its last task)."""
    state = read_checkpoint(run_dir / "checkpoints" / "latest")
    (key,) = [k for k in state["plugins"] if k.endswith(f":{name}")]
    return state["plugins"][key]


def _assert_ranks_agree(run_dir: Path) -> None:
    """After every task both ranks digested the same plugin state (the loop also refuses)."""
    states = records(run_dir, "rank_state")
    assert len(states) == 2
    assert all(len(r["plugin_digests"]) == 2 and len(set(r["plugin_digests"])) == 1
               for r in states)


def _assert_same_method_losses(one: Path, two: Path, method: str) -> None:
    a, b = ([r["losses"][method] for r in records(d, "step") if r["task"] > 0]
            for d in (one, two))
    assert len(a) == len(b) > 0 and max(a) > 0  # the term is on in task 2
    assert a == pytest.approx(b, rel=1e-4, abs=1e-7)


def _assert_same_ewc_state(one: Path, two: Path) -> None:
    """Fisher and anchors of both tasks: full tensors, equal to one process's."""
    a, b = (_plugin_state(d, "ewc")["consolidated"] for d in (one, two))
    assert len(a) == len(b) == 2
    for x, y in zip(a, b, strict=True):
        for part in ("fisher", "anchor"):
            assert x[part].keys() == y[part].keys() and x[part]
            for name in x[part]:
                assert x[part][name].shape == y[part][name].shape  # whole, not a shard
                torch.testing.assert_close(y[part][name], x[part][name], atol=1e-5, rtol=1e-3)
    assert any(float(f.abs().max()) > 0 for f in a[0]["fisher"].values())


def test_sharded_ewc_equals_one_process(tmp_path: Path, torchrun_runs: Batch) -> None:
    """EWC with fixed replay on one process (batch 4) and sharded over two (2 rows each)."""
    reference = one(tmp_path, "one", 4, *SHORT, *EWC)
    sharded = torchrun_runs.run_dir("freg_ewc")
    _assert_same_training(reference, sharded, tol=1e-5)
    assert sum(r["replayed"] for r in records(sharded, "step")) > 0
    _assert_same_method_losses(reference, sharded, "ewc")
    _assert_same_ewc_state(reference, sharded)
    _assert_ranks_agree(sharded)
    fisher = [[r["fisher_mean"] for r in records(d, "ewc")] for d in (reference, sharded)]
    assert len(fisher[0]) == 2 and fisher[0] == pytest.approx(fisher[1], rel=1e-4)


def test_crashed_sharded_ewc_run_resumes_bit_identically(torchrun_runs: Batch) -> None:
    """Dies in task 2 as it is about to save step 3: step 3 is logged, not checkpointed, and
    is redone from step 2's checkpoint (task 1's Fisher and anchor, the sharded optimizer)."""
    whole = torchrun_runs.run_dir("freg_ewc")
    resumed = crashed_and_resumed(torchrun_runs, "freg_ewc_crashed", at_step=3)
    assert (whole / "scores.csv").read_text() == (resumed / "scores.csv").read_text()
    _assert_same_training(whole, resumed, tol=0.0)
    _assert_ranks_agree(resumed)
    a, b = (_plugin_state(d, "ewc")["consolidated"] for d in (whole, resumed))
    for x, y in zip(a, b, strict=True):
        for part in ("fisher", "anchor"):
            assert all(torch.equal(x[part][n], y[part][n]) for n in x[part])


def test_sharded_lwf_equals_one_process(tmp_path: Path, torchrun_runs: Batch) -> None:
    reference = one(tmp_path, "one", 4, *SHORT, LWF)
    sharded = torchrun_runs.run_dir("freg_lwf")
    _assert_same_training(reference, sharded, tol=1e-5)
    _assert_same_method_losses(reference, sharded, "lwf")
    _assert_ranks_agree(sharded)
    # the teacher (the previous task's adapter: the backbone is shared) is saved whole
    a, b = (_plugin_state(d, "lwf")["teacher"] for d in (reference, sharded))
    assert a.keys() == b.keys() and a and all("lora_" in name for name in a)
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=0)
