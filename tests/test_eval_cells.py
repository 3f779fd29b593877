"""`eval.cells=needed` evaluates only the cells the metrics use, with the same values there."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from retain.eval.matrix import ScoreMatrix
from retain.train.loop import run
from tests.test_engine import tiny_config


def test_needed_cells_match_all_cells_where_both_evaluate(tmp_path: Path) -> None:
    full = run(tiny_config(tmp_path, "name=all", "eval.cells=all", "data.num_tasks=4"))
    part = run(tiny_config(tmp_path, "name=needed", "eval.cells=needed", "data.num_tasks=4"))
    a = ScoreMatrix.from_csv(full.run_dir / "scores.csv")
    b = ScoreMatrix.from_csv(part.run_dir / "scores.csv")
    needed = np.zeros_like(a.R, dtype=bool)
    needed[0] = True
    for t in range(1, 5):
        needed[t, : min(t + 1, 4)] = True
    assert np.isfinite(a.R).all()
    assert np.isfinite(b.R[needed]).all() and np.isnan(b.R[~needed]).all()
    assert (~needed).sum() == 2 + 1  # the cells above the superdiagonal of rows 1..T
    np.testing.assert_array_equal(a.R[needed], b.R[needed])
    assert b.cells == "needed" and b.is_complete() and a.cells == "all"
    for key in ("ap", "aia", "la", "bwt", "forgetting_max", "fwt"):
        assert full.metrics[key] == part.metrics[key], key
    assert part.metrics["fwt"] is not None and np.isfinite(part.metrics["fwt"])
