"""GeRe on two CPU processes trains like one process with the doubled batch: the same general
rows per step, the same losses and weights (within gloo's summation order), equal plugin
states on both ranks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_distributed import _assert_same_training, _records, _run

pytestmark = pytest.mark.slow  # torchrun: two processes per run


def test_gere_with_mssr_on_two_processes_matches_one(tmp_path: Path) -> None:
    source = tmp_path / "general.jsonl"
    text = [f"Note {i}: the {'quiet ' * (i % 3)}harbour fills with boats." for i in range(9)]
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in text))
    extra = ("methods=[mssr,gere]", "mssr.first_interval_units=0.5", f"general.source={source}",
             "general.size=8", "general.max_tokens=40", "general.mixing=per_batch",
             "general.per_batch_rows=1", "general.target_batch_size=2")
    one = _run(tmp_path, "one", 1, 4, *extra)
    two = _run(tmp_path, "two", 2, 2, *extra)
    assert (one / "scores.csv").read_text() == (two / "scores.csv").read_text()
    _assert_same_training(one, two, tol=1e-4)
    steps = _records(two, "step")
    assert all(r["general"] == 1 for r in steps)
    for a, b in zip(_records(one, "step"), steps, strict=True):
        assert set(a["losses"]) == set(b["losses"]) == {"task", "general_lm", "general_tm"}
    # the steps' first replay rows were on one of the two ranks: equal states all the same
    states = _records(two, "rank_state")
    assert len(states) == 3 and all(len(set(r["plugin_digests"])) == 1 for r in states)
