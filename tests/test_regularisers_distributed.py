"""EWC and LwF on two CPU processes train exactly like one process with the doubled batch:
the Fisher is split over the processes and added up, the teacher forward is per rank.
Two-process runs: scenarios of the suite's one torchrun launch (tests/torchrun_batch.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_distributed import _assert_same_training
from tests.torchrun_batch import Batch, one, records, two

pytestmark = pytest.mark.slow  # torchrun: two processes per run
METHODS = ("ewc", "lwf")
SCENARIOS = [two(f"rd_{m}", 2, f"methods=[fixed,{m}]", "ewc.weight=1000") for m in METHODS]


@pytest.mark.parametrize("method", METHODS)
def test_two_processes_match_one_with_the_doubled_batch(
    tmp_path: Path, torchrun_runs: Batch, method: str
) -> None:
    reference = one(tmp_path, "one", 4, f"methods=[fixed,{method}]", "ewc.weight=1000")
    two_processes = torchrun_runs.run_dir(f"rd_{method}")
    _assert_same_training(reference, two_processes, tol=1e-4)
    steps = [[r["losses"] for r in records(d, "step") if r["task"] > 0]
             for d in (reference, two_processes)]
    assert len(steps[0]) == len(steps[1]) > 0
    for a, b in zip(*steps, strict=True):
        assert a[method] == pytest.approx(b[method], rel=1e-3, abs=1e-7)
    assert max(s[method] for s in steps[0]) > 0
    if method == "ewc":
        fisher = [[r["fisher_mean"] for r in records(d, "ewc")]
                  for d in (reference, two_processes)]
        assert len(fisher[0]) == 3 and fisher[0] == pytest.approx(fisher[1], rel=1e-4)
