"""GeRe on two CPU processes trains like one process with the doubled batch: the same general
rows per step, the same losses and weights (within gloo's summation order), equal plugin
states on both ranks. The two-process run: a scenario of the suite's one torchrun launch
(tests/torchrun_batch.py); the reference runs in this process."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_distributed import _assert_same_training
from tests.torchrun_batch import GENERAL, Batch, one, records, two, write_general

pytestmark = pytest.mark.slow  # torchrun: two processes per run
GERE = ("methods=[mssr,gere]", "mssr.first_interval_units=0.5",
        f"general.source={{out}}/{GENERAL}", "general.size=8", "general.max_tokens=40",
        "general.mixing=per_batch", "general.per_batch_rows=1", "general.target_batch_size=2")
SCENARIOS = [two("gd_gere", 2, *GERE)]


def test_gere_with_mssr_on_two_processes_matches_one(
    tmp_path: Path, torchrun_runs: Batch
) -> None:
    write_general(tmp_path)
    reference = one(tmp_path, "one", 4, *GERE)
    two_processes = torchrun_runs.run_dir("gd_gere")
    assert (reference / "scores.csv").read_text() == (two_processes / "scores.csv").read_text()
    _assert_same_training(reference, two_processes, tol=1e-4)
    steps = records(two_processes, "step")
    assert all(r["general"] == 1 for r in steps)
    for a, b in zip(records(reference, "step"), steps, strict=True):
        assert set(a["losses"]) == set(b["losses"]) == {"task", "general_lm", "general_tm"}
    # the steps' first replay rows were on one of the two ranks: equal states all the same
    states = records(two_processes, "rank_state")
    assert len(states) == 3 and all(len(set(r["plugin_digests"])) == 1 for r in states)
