"""The table printed at the end of run/bench/demo: CIs, warnings, paired differences."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from retain.eval.matrix import ScoreMatrix
from retain.eval.metrics import compute_metrics
from retain.results.summary import summary_lines
from retain.storage.examples import ExampleResults
from retain.train.outcome import uncertainty_summary

TASKS = ["a", "b"]


def _run_dir(root: Path, name: str, correct_b: int, n: int = 60) -> tuple[Path, dict]:
    """A 2-task run: task a always 50 %, task b after its own training `correct_b` of n."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    examples, matrix = ExampleResults(), ScoreMatrix(TASKS)
    half = np.array([1.0, 0.0] * (n // 2))
    b_final = np.array([1.0] * correct_b + [0.0] * (n - correct_b))
    cells = {0: (half, half), 1: (half, half), 2: (half, b_final)}
    for stage, (a, b) in cells.items():
        examples.set(stage, "a", a)
        examples.set(stage, "b", b)
        matrix.set_row(stage, {"a": 100 * a.mean(), "b": 100 * b.mean()})
    matrix.to_csv(run_dir / "scores.csv")
    examples.save(run_dir)
    metrics = compute_metrics(matrix)
    metrics.update(uncertainty_summary(examples, matrix, seed=0))
    return run_dir, metrics


def test_summary_shows_cis_notes_and_significant_paired_differences(tmp_path: Path) -> None:
    base_dir, base = _run_dir(tmp_path, "base", correct_b=30)
    better_dir, better = _run_dir(tmp_path, "better", correct_b=58)
    same_dir, same = _run_dir(tmp_path, "same", correct_b=31)
    better["warnings"] = ["fixed replayed nothing in this run"]
    lines = summary_lines([("base", base), ("better", better), ("same", same)],
                          [base_dir, better_dir, same_dir])
    text = "\n".join(lines)
    ci = base["ci"]["ap"]
    assert f"{base['ap']:8.2f} [{ci['low']:5.1f},{ci['high']:5.1f}]" in lines[1]
    assert "warning (better): fixed replayed nothing" in text
    assert "differences of a few points are noise" not in text  # 60 examples per task
    paired = {line.split(":")[0].strip(): line for line in lines if line.startswith("  ")}
    assert "ap +23.33" in paired["better"] and "]*" in paired["better"].split(";")[0]
    assert "ap +0.83" in paired["same"] and "]*" not in paired["same"].split(";")[0]


def test_summary_of_one_run_says_when_test_sets_are_small(tmp_path: Path) -> None:
    run_dir, metrics = _run_dir(tmp_path, "small", correct_b=10, n=20)
    text = "\n".join(summary_lines([("small", metrics)], [run_dir]))
    assert "differences of a few points are noise" in text and "paired" not in text
