"""EWC and LwF on two CPU processes train exactly like one process with the doubled batch:
the Fisher is split over the processes and added up, the teacher forward is per rank."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_distributed import _assert_same_training, _records, _run

pytestmark = pytest.mark.slow  # torchrun: two processes per run


@pytest.mark.parametrize("method", ["ewc", "lwf"])
def test_two_processes_match_one_with_the_doubled_batch(tmp_path: Path, method: str) -> None:
    extra = (f"methods=[fixed,{method}]", "ewc.weight=1000")
    one = _run(tmp_path, "one", 1, 4, *extra)
    two = _run(tmp_path, "two", 2, 2, *extra)
    _assert_same_training(one, two, tol=1e-4)
    steps = [[r["losses"] for r in _records(d, "step") if r["task"] > 0] for d in (one, two)]
    for a, b in zip(*steps, strict=True):
        assert a[method] == pytest.approx(b[method], rel=1e-3, abs=1e-7)
    assert max(s[method] for s in steps[0]) > 0
    if method == "ewc":
        fisher = [[r["fisher_mean"] for r in _records(d, "ewc")] for d in (one, two)]
        assert len(fisher[0]) == 3 and fisher[0] == pytest.approx(fisher[1], rel=1e-4)
