"""Cross-fitted max-based metrics (`eval/crossfit.py`): crafted half matrices by hand, the
half-stratified draw, and the bias the cross-fit removes on pure noise."""

from __future__ import annotations

import numpy as np
import pytest

from retain.eval.crossfit import crossfit_metrics, strata_sizes, stratified_draw
from retain.eval.uncertainty import point_metrics
from retain.storage.examples import ExampleResults


def _halves() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """T = 2, one batch row: task a's halves, stages 0..2 (task b only at stage 2)."""
    RA = np.array([[[10.0, 0], [90, 0], [50, 40]]])
    RB = np.array([[[10.0, 0], [60, 0], [40, 30]]])
    present = np.array([[True, True], [True, False], [True, True]])
    return RA, RB, present


def test_crossfit_by_hand() -> None:
    RA, RB, present = _halves()
    out = crossfit_metrics(RA, RB, present, 2)
    # task a: the only stage after learning is 1, so best = stage 1 on both halves;
    # on B: 60 − 40 = 20, on A: 90 − 50 = 40 → 30 (= the plug-in on the pooled halves)
    assert out["forgetting_max_xfit"][0] == pytest.approx(30.0)
    assert out["forgetting_first_xfit"][0] == pytest.approx(30.0)
    # normalized_avg: task a's stages 0..2: the best on A (stage 1) scored on B is 60, the
    # best on B (stage 1) scored on A is 90; the final scores 50 + 40 → 90 / 150; task b
    # (stage 2 only) → 1
    expected = (90 / 150 + 1.0) / 2
    assert out["normalized_avg_xfit"][0] == pytest.approx(expected)


def test_crossfit_chooses_on_one_half_and_scores_on_the_other() -> None:
    RA = np.zeros((1, 4, 3))
    RB = np.zeros((1, 4, 3))
    RA[0, 1:, 0], RB[0, 1:, 0] = [90, 70, 50], [60, 80, 40]  # task 1 at stages 1, 2, 3
    present = np.ones((4, 3), dtype=bool)
    out = crossfit_metrics(RA, RB, present, 3)
    # best on A: stage 1 → on B 60 − 40 = 20; best on B: stage 2 → on A 70 − 50 = 20
    assert out["forgetting_first_xfit"][0] == pytest.approx(20.0)
    pooled = (RA + RB) / 2  # the plug-in: max(75, 75) − 45 = 30, larger
    assert pooled[0, 1:3, 0].max() - pooled[0, 3, 0] == pytest.approx(30.0)


def test_stratified_draw_keeps_each_position_in_its_half() -> None:
    idx = stratified_draw(np.random.default_rng(0), 9, 200)
    assert idx.shape == (200, 9)
    assert np.all(idx[:, 0::2] % 2 == 0) and np.all(idx[:, 1::2] % 2 == 1)
    assert set(np.unique(idx[:, 0::2])) == {0, 2, 4, 6, 8}
    assert strata_sizes(9) == [5, 4] and strata_sizes(1) == [1]


def test_crossfit_removes_the_upward_bias_on_pure_noise() -> None:
    """15 tasks × 8 examples answered at random at every stage: nothing is forgotten."""
    rng = np.random.default_rng(1)
    tasks = [f"t{i}" for i in range(15)]
    plug, xfit = [], []
    for _ in range(60):
        r = ExampleResults()
        for stage in range(16):
            for name in tasks:
                r.set(stage, name, (rng.random(8) < 0.5).astype(float))
        point = point_metrics(r, tasks)
        plug.append(point["forgetting_max"])
        xfit.append(point["forgetting_max_xfit"])
    assert np.mean(plug) > 8.0  # the papers' plug-in: a max over noise
    assert abs(np.mean(xfit)) < 2.5  # SE of this mean is about 1 point
