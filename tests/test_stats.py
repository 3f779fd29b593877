"""`eval/stats.py`, the one statistics module: the crossed seed × example estimator against
hand-computed values, its degrees of freedom, Holm and Benjamini–Hochberg, and the words an
interval is labelled with."""

from __future__ import annotations

import math

import numpy as np
import pytest

from retain.eval.stats import (
    ONE_SEED,
    SEVERAL_SEEDS,
    Estimate,
    adjust,
    benjamini_hochberg,
    estimate,
    holm,
    scope_text,
    small_sample_factor,
    t_pvalue,
    t_quantile,
)


def test_crossed_estimator_removes_the_flips_counted_twice() -> None:
    reps = [np.array([0.0, 2, 0, 2]), np.array([0.0, 2, 0, 2]), np.array([1.0, 1, 1, 1])]
    est = estimate([0.0, 4.0, 2.0], reps)
    # V_one = (4/3 + 4/3 + 0)/3 = 8/9; seed means 1/3, 5/3, 1/3, 5/3: V_mean = 16/27;
    # flips σ²_sx/n = 3 (8/9 − 16/27)/2 = 4/9; example term 16/27 − (4/9)/3 = 4/9;
    # S² = 4: Var = 4/3 + 4/9 = 16/9; σ²_seed = 4 − 4/9 = 32/9
    assert est.mean == 2.0
    assert est.se == pytest.approx(4 / 3)
    assert est.seed_sd == pytest.approx(math.sqrt(32 / 9))
    assert est.components == pytest.approx((32 / 9, 4 / 9, 4 / 9))
    low_spread = estimate([1.9, 2.0, 2.1], reps)  # S² = 0.01 < the flips: σ²_seed shown as 0
    assert low_spread.seed_sd == 0.0 and low_spread.components[0] == pytest.approx(0.01 - 4 / 9)
    df = (16 / 9) ** 2 / ((4 / 3) ** 2 / 2 + (4 / 9) ** 2 / 1)
    assert est.df == pytest.approx(df)
    half = t_quantile(0.95, df) * 4 / 3
    assert (est.low, est.high) == (pytest.approx(2 - half), pytest.approx(2 + half))
    # adding the seed spread and the bootstrap variance counts the flips twice
    assert est.se < math.sqrt(4 / 3 + 16 / 27)


def test_crossed_estimator_with_strata_and_satterthwaite_df() -> None:
    reps = [np.array([1.0, 3, 1, 3]), np.array([2.0, 4, 2, 4])]  # seed-mean draws 1.5, 3.5, ...
    est = estimate([2.0, 3.0], reps, strata=[4, 4], difference=True)
    c = 4 / 3  # m/(m − 1) for strata of 4
    v_one = c * 4 / 3  # both seeds: var 4/3
    v_mean = c * 4 / 3  # seed means [1.5, 3.5, 1.5, 3.5]: var 4/3
    flips = 2 * (v_one - v_mean) / 1  # 0: the seeds' draws move together
    spread, example = 0.5 / 2, v_mean - flips / 2  # S² of [2, 3] is 0.5
    var = spread + example
    df = var**2 / (spread**2 / 1 + example**2 / 6)  # Σ(m − 1) = 6
    assert est.se == pytest.approx(math.sqrt(var)) and est.df == pytest.approx(df)
    assert est.p == pytest.approx(t_pvalue(2.5 / math.sqrt(var), df))
    assert est.significant == (est.low > 0)


def test_one_seed_is_the_example_bootstrap_with_the_small_sample_factor() -> None:
    reps = np.array([0.0, 1.0, 2.0, 3.0])
    est = estimate([1.5], [reps], strata=[3, 3])
    se = math.sqrt(1.5 * np.var(reps, ddof=1))  # m/(m − 1) = 3/2
    assert est.se == pytest.approx(se) and est.df == 4.0 and est.seed_sd is None
    assert est.scope == ONE_SEED and "over seeds" not in est.scope
    assert estimate([1.0, 2.0]).scope == SEVERAL_SEEDS == scope_text(3)


def test_seeds_on_other_examples_use_the_seed_spread_only() -> None:
    reps = [np.array([0.0, 2.0]), np.array([5.0, 9.0])]
    est = estimate([1.0, 7.0], reps, shared=False)
    assert est.se == pytest.approx(math.sqrt(18.0 / 2)) and est.df == 1.0


def test_without_draws_the_t_interval_over_seeds_and_none_for_one() -> None:
    est = estimate([70.0, 72.0, 74.0])
    half = t_quantile(0.95, 2) * 2.0 / math.sqrt(3)
    assert (est.low, est.high) == (pytest.approx(72 - half), pytest.approx(72 + half))
    assert estimate([3.0]) == Estimate(3.0, None, None, 1)


def test_identical_runs_give_a_zero_difference_that_is_not_significant() -> None:
    est = estimate([0.0], [np.zeros(50)], strata=[5, 5], difference=True)
    assert (est.low, est.high, est.p, est.significant) == (0.0, 0.0, 1.0, False)


def test_t_quantile_and_pvalue_agree() -> None:
    for df in (1, 2, 5, 30, 400):
        q = t_quantile(0.95, df)
        assert t_pvalue(q, df) == pytest.approx(0.05, abs=1e-9)
    assert t_quantile(0.95, 2.7) == t_quantile(0.95, 2)  # Satterthwaite df rounded down
    assert t_quantile(0.95, 1e9) == pytest.approx(1.959964, abs=1e-4)
    assert small_sample_factor([4, 4]) == pytest.approx(4 / 3)
    assert small_sample_factor([1]) == 1.0


def test_holm_and_benjamini_hochberg_by_hand() -> None:
    p = [0.01, 0.04, 0.03]
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06])
    assert benjamini_hochberg(p) == pytest.approx([0.03, 0.04, 0.04])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == [] and benjamini_hochberg([]) == []


def _diff(p: float) -> Estimate:
    return Estimate(1.0, 0.1, 1.9, 1, significant=True, se=0.4, df=50, p=p)


def test_adjust_uses_holm_for_the_primary_metric_and_bh_for_the_rest() -> None:
    table = {
        "a": {"ap": _diff(0.02), "bwt": _diff(0.02)},
        "b": {"ap": _diff(0.03), "bwt": _diff(0.001)},
        "multitask": {"ap": _diff(0.001), "bwt": None},
    }
    out = adjust(table, "ap", exclude=["multitask"])
    # Holm over a, b: 0.02·2 = 0.04 → 0.04 and max(0.04, 0.03) = 0.04: both below 0.05
    assert out["a"]["ap"].correction == "holm" and out["a"]["ap"].significant
    assert out["b"]["ap"].significant
    # secondary family: a.bwt 0.02, b.bwt 0.001, multitask.ap 0.001 → BH 0.02, 0.0015, 0.0015
    assert out["multitask"]["ap"].correction == "bh" and out["multitask"]["ap"].significant
    assert out["a"]["bwt"].significant and out["multitask"]["bwt"] is None
    three = adjust({k: {"ap": _diff(0.02)} for k in "xyz"}, "ap")
    assert not any(v["ap"].significant for v in three.values())  # Holm: 0.06 each
    assert three["x"]["ap"].low == 0.1  # the interval itself is left as it was
