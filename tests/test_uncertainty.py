import math

import numpy as np
import pytest

from retain.eval.crossfit import PLUGIN_MAX, XFIT_METRICS
from retain.eval.matrix import ScoreMatrix
from retain.eval.metrics import compute_metrics
from retain.eval.paired_differences import paired_difference
from retain.eval.seeds import combine_seeds, noise_note
from retain.eval.stats import t_quantile
from retain.eval.uncertainty import (
    BOOTSTRAP_METRICS as ALL_METRICS,
)
from retain.eval.uncertainty import (
    NOISE_MIN_EXAMPLES,
    bootstrap_metrics,
    point_metrics,
    resample_indices,
)
from retain.storage.examples import ExampleResults

TASKS = ["a", "b", "c"]
GENERAL = ["mmlu", "arc_easy", "hellaswag", "wikitext_ppl"]
BOOTSTRAP_METRICS = tuple(k for k in ALL_METRICS if k not in XFIT_METRICS)
"""The metrics `compute_metrics` also has (the cross-fits need per-example results)."""
SIZES = {"a": 7, "b": 37, "c": 5, "mmlu": 9, "arc_easy": 4, "hellaswag": 6, "wikitext_ppl": 8}


def _crafted(seed: int = 0, stages: int = 4) -> ExampleResults:
    """T=3 with token-F1-like continuous scores (sums are not exact in floating point), three
    scored general columns (so the order of the general mean matters) and a perplexity column."""
    rng = np.random.default_rng(seed)
    r = ExampleResults()
    for stage in range(stages):
        for name in TASKS + GENERAL[:3]:
            r.set(stage, name, rng.integers(0, 4, SIZES[name]) / 3.0)
        r.set_perplexity(stage, "wikitext_ppl", rng.random(8) * 40, rng.integers(1, 9, 8))
    return r


def _matrix(cells: dict[tuple[int, str], float]) -> ScoreMatrix:
    m = ScoreMatrix(TASKS, GENERAL, score_types={"wikitext_ppl": "perplexity"})
    for (stage, name), value in cells.items():
        if name in TASKS:
            m.set_row(stage, {name: value})
        else:
            m.set_row(stage, {}, {name: value})
    return m


def _plain_matrix(r: ExampleResults) -> ScoreMatrix:
    return _matrix({(s, n): r.get(s, n).value() for n in TASKS + GENERAL for s in r.stages_of(n)})


def _documented_draws(names: list[str], n_resamples: int, seed: int) -> dict[str, np.ndarray]:
    """One generator; per column the even positions drawn from the even examples, then the
    odd positions from the odd ones."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in names:
        n = SIZES[name]
        even, odd = np.arange(0, n, 2), np.arange(1, n, 2)
        idx = np.empty((n_resamples, n), dtype=np.int64)
        idx[:, 0::2] = even[rng.integers(0, even.size, size=(n_resamples, even.size))]
        idx[:, 1::2] = odd[rng.integers(0, odd.size, size=(n_resamples, odd.size))]
        out[name] = idx
    return out


def _hand_interval(point: float, reps: np.ndarray) -> tuple[float, float]:
    """point ± t(Σ(m−1)) · √(m_h/(m_h−1) · var(reps)) over the half strata of every column."""
    strata = [m for name in TASKS + GENERAL for m in ((SIZES[name] + 1) // 2, SIZES[name] // 2)]
    m_h = len(strata) / sum(1 / m for m in strata)
    se = math.sqrt(m_h / (m_h - 1) * np.var(reps, ddof=1))
    half = t_quantile(0.95, sum(m - 1 for m in strata)) * se
    return point - half, point + half


def _slow_reference(r: ExampleResults, n_resamples: int, seed: int) -> dict[str, np.ndarray]:
    """Direct loops: redraw the documented indices, build each resampled matrix cell by cell
    and score it with `compute_metrics` itself."""
    draws = _documented_draws(TASKS + GENERAL, n_resamples, seed)
    metrics: dict[str, list[float]] = {}
    for b in range(n_resamples):
        cells = {}
        for name in TASKS + GENERAL:
            idx = draws[name][b]
            for s in r.stages_of(name):
                cell = r.get(s, name)
                if name == "wikitext_ppl":
                    cells[(s, name)] = np.exp(cell.nll_sum[idx].sum() / cell.token_count[idx].sum())
                else:
                    cells[(s, name)] = 100.0 * cell.scores[idx].sum() / len(idx)
        m = _matrix(cells)
        values = compute_metrics(m)
        for key in BOOTSTRAP_METRICS:
            if values[key] is not None:
                metrics.setdefault(key, []).append(values[key])
        for t, v in enumerate(values["ap_per_stage"]):
            metrics.setdefault(f"ap_per_stage{t}", []).append(v)
        for g in GENERAL:
            metrics.setdefault(f"general_delta:{g}", []).append(
                m.G[3, m.general.index(g)] - m.G[0, m.general.index(g)]
            )
    return {k: np.array(v) for k, v in metrics.items()}


def test_bootstrap_equals_a_slow_loop_over_the_same_draws():
    r, B, seed = _crafted(), 300, 11
    got = bootstrap_metrics(r, TASKS, GENERAL, n_resamples=B, seed=seed)
    ref = _slow_reference(r, B, seed)
    plain = compute_metrics(_plain_matrix(r))
    for key in [*BOOTSTRAP_METRICS, *(f"general_delta:{g}" for g in GENERAL)]:
        if key in PLUGIN_MAX:  # the papers' plug-in: biased at small n, no interval
            assert got[key]["low"] is None and got[key]["high"] is None, key
            continue
        low, high = _hand_interval(got[key]["value"], ref[key])
        assert got[key]["low"] == pytest.approx(low) and got[key]["high"] == pytest.approx(high)
    for key in BOOTSTRAP_METRICS:
        assert got[key]["value"] == plain[key], key
    for t, ci in enumerate(got["ap_per_stage"]):
        low, high = _hand_interval(plain["ap_per_stage"][t], ref[f"ap_per_stage{t}"])
        assert ci["value"] == plain["ap_per_stage"][t]
        assert (ci["low"], ci["high"]) == (pytest.approx(low), pytest.approx(high))
    # the interval is a real interval around the point
    assert got["ap"]["low"] < got["ap"]["value"] < got["ap"]["high"]


def test_draws_follow_the_documented_order():
    r = _crafted()
    idx = resample_indices(r, TASKS + GENERAL, 5, seed=2)
    expected = _documented_draws(TASKS + GENERAL, 5, seed=2)
    for name in TASKS + GENERAL:
        np.testing.assert_array_equal(idx[name], expected[name])
        assert np.all(idx[name][:, 0::2] % 2 == 0) and np.all(idx[name][:, 1::2] % 2 == 1)


def test_point_values_equal_compute_metrics_on_the_mean_matrix():
    for seed in range(5):
        r = _crafted(seed)
        plain = compute_metrics(_plain_matrix(r))
        point = point_metrics(r, TASKS, GENERAL)
        for key in [*BOOTSTRAP_METRICS, "ap_per_stage"]:
            assert point[key] == plain[key], (seed, key)
        assert plain["general_delta"] is not None and plain["fwt"] is not None


def test_point_values_are_bitwise_equal_on_a_long_stream():
    """With 12 tasks numpy's pairwise summation would differ from metrics.py's left-to-right
    sums in the last bits; the batch code must sum in the same order."""
    rng = np.random.default_rng(7)
    tasks = [f"t{i}" for i in range(12)]
    r = ExampleResults()
    m = ScoreMatrix(tasks)
    for stage in range(13):
        for name in tasks:
            r.set(stage, name, rng.random(3))
        m.set_row(stage, {name: r.get(stage, name).value() for name in tasks})
    plain, point = compute_metrics(m), point_metrics(r, tasks)
    for key in [*BOOTSTRAP_METRICS, "ap_per_stage"]:
        assert point[key] == plain[key], key


def test_seeded_and_reproducible():
    r = _crafted()
    one = bootstrap_metrics(r, TASKS, GENERAL, n_resamples=200, seed=4)
    assert one == bootstrap_metrics(r, TASKS, GENERAL, n_resamples=200, seed=4)
    other = bootstrap_metrics(r, TASKS, GENERAL, n_resamples=200, seed=5)
    assert (one["ap"]["low"], one["ap"]["high"]) != (other["ap"]["low"], other["ap"]["high"])
    assert one["ap"]["value"] == other["ap"]["value"]


def _needed_only(full: ExampleResults) -> ExampleResults:
    """Row 0, the lower triangle with the diagonal, the superdiagonal, all general cells."""
    r = ExampleResults()
    for name in TASKS + GENERAL:
        i = TASKS.index(name) if name in TASKS else -1
        for s in full.stages_of(name):
            if i >= 0 and s != 0 and i > s:
                continue
            cell = full.get(s, name)
            if cell.kind == "perplexity":
                r.set_perplexity(s, name, cell.nll_sum, cell.token_count)
            else:
                r.set(s, name, cell.scores)
    return r


def test_needed_cells_give_the_same_intervals_as_all_cells():
    full = _crafted()
    needed = _needed_only(full)
    assert needed.get(1, "c") is None and needed.get(1, "b") is not None
    a = bootstrap_metrics(full, TASKS, GENERAL, n_resamples=200, seed=1)
    b = bootstrap_metrics(needed, TASKS, GENERAL, n_resamples=200, seed=1)
    for key in ("ap", "aia", "la", "bwt", "forgetting_max", "forgetting_first", "fwt"):
        assert a[key] == b[key], key
    assert a["general_delta"] == b["general_delta"]
    assert a["ap_per_stage"] == b["ap_per_stage"]
    # normalized_avg takes its max over the evaluated stages, as compute_metrics does
    assert b["normalized_avg"]["value"] == point_metrics(needed, TASKS, GENERAL)["normalized_avg"]
    assert a["normalized_avg"] is not None


def test_missing_superdiagonal_makes_only_fwt_undefined():
    r = _needed_only(_crafted())
    stripped = ExampleResults()
    for name in r.names():
        for s in r.stages_of(name):
            if (s, name) == (1, "b"):
                continue
            cell = r.get(s, name)
            if cell.kind == "perplexity":
                stripped.set_perplexity(s, name, cell.nll_sum, cell.token_count)
            else:
                stripped.set(s, name, cell.scores)
    out = bootstrap_metrics(stripped, TASKS, GENERAL, n_resamples=50)
    assert out["fwt"] is None
    assert all(out[k] is not None for k in ("ap", "la", "bwt", "forgetting_max"))


def test_interrupted_run_scores_the_finished_prefix_like_compute_metrics():
    r = _crafted(stages=3)  # rows 0..2 of a 3-task stream
    plain = compute_metrics(_plain_matrix(r))
    assert plain["last_stage"] == 2
    out = bootstrap_metrics(r, TASKS, GENERAL, n_resamples=50)
    for key in BOOTSTRAP_METRICS:
        assert (None if out[key] is None else out[key]["value"]) == plain[key], key
    assert len(out["ap_per_stage"]) == 2
    empty = bootstrap_metrics(ExampleResults(), TASKS, n_resamples=10)
    assert all(empty[k] is None for k in BOOTSTRAP_METRICS) and empty["ap_per_stage"] == []


def test_paired_difference_of_identical_runs_is_exactly_zero():
    r = _crafted()
    copy = ExampleResults.from_dict(r.to_dict())
    out = paired_difference(r, copy, TASKS, GENERAL, n_resamples=500, seed=3)
    assert out["ap"] is not None
    for key, diff in out.items():
        if diff is not None:
            assert (diff["value"], diff["low"], diff["high"]) == (0.0, 0.0, 0.0), key
            assert diff["significant"] is False


def _pair(n: int, flip: int | None) -> tuple[ExampleResults, ExampleResults]:
    """Two 2-task runs. flip=None: on task x, A is all-correct at every stage and B 50 %.
    Otherwise B equals A except example `flip` of task x at the last stage."""
    rng = np.random.default_rng(0)
    a, b = ExampleResults(), ExampleResults()
    for stage in range(3):
        shared = (rng.random(n) < 0.6).astype(float)
        x = (rng.random(n) < 0.7).astype(float) if flip is not None else np.ones(n)
        a.set(stage, "x", x)
        a.set(stage, "y", shared)
        b.set(stage, "y", shared)
        if flip is None:
            b.set(stage, "x", np.arange(n) % 2)
        else:
            bx = x.copy()
            if stage == 2:
                bx[flip] = 1.0 - bx[flip]
            b.set(stage, "x", bx)
    return a, b


def test_known_significant_difference():
    a, b = _pair(200, None)
    out = paired_difference(a, b, ["x", "y"], n_resamples=1000, seed=0)
    assert out["ap"]["value"] == 25.0  # (100 - 50) / 2
    assert out["ap"]["low"] > 0 and out["ap"]["significant"] is True
    assert out["la"]["significant"] is True
    assert out["bwt"]["value"] == 0.0 and out["bwt"]["significant"] is False


def test_known_insignificant_difference():
    a, b = _pair(100, flip=3)
    out = paired_difference(a, b, ["x", "y"], n_resamples=1000, seed=0)
    assert abs(out["ap"]["value"]) == 0.5  # one example of 100 on one of two tasks
    assert out["ap"]["low"] <= 0.0 <= out["ap"]["high"]
    assert out["ap"]["significant"] is False


def test_pairing_refuses_runs_on_different_examples():
    a, b = _pair(20, flip=1)
    short = ExampleResults()
    for s in range(3):
        short.set(s, "x", np.ones(19))
        short.set(s, "y", np.ones(20))
    with pytest.raises(ValueError, match="cannot pair.*'x' has 20 examples in run A and 19"):
        paired_difference(a, short, ["x", "y"], n_resamples=10)
    missing = ExampleResults()
    for s in range(3):
        missing.set(s, "x", a.get(s, "x").scores)
    with pytest.raises(ValueError, match="cannot pair.*'y'"):
        paired_difference(a, missing, ["x", "y"], n_resamples=10)
    ida, idb = ExampleResults(), ExampleResults()
    for s in range(3):
        for name in ("x", "y"):
            ida.set(s, name, a.get(s, name).scores, ids=[f"e{i}" for i in range(20)])
            idb.set(s, name, a.get(s, name).scores, ids=[f"f{i}" for i in range(20)])
    with pytest.raises(ValueError, match="different example ids"):
        paired_difference(ida, idb, ["x", "y"], n_resamples=10)
    prefix = ExampleResults()
    for s in range(2):
        for name in ("x", "y"):
            prefix.set(s, name, a.get(s, name).scores)
    with pytest.raises(ValueError, match="finished stage"):
        paired_difference(a, prefix, ["x", "y"], n_resamples=10)


def test_t_quantile_matches_published_tables():
    table = {1: 12.7062, 2: 4.3027, 3: 3.1824, 5: 2.5706, 10: 2.2281, 30: 2.0423}
    for df, q in table.items():
        assert t_quantile(0.95, df) == pytest.approx(q, abs=1e-4), df
    assert t_quantile(0.90, 1) == pytest.approx(math.tan(0.45 * math.pi), rel=1e-12)
    assert t_quantile(0.99, 4) == pytest.approx(4.6041, abs=1e-4)


def test_combine_seeds_against_a_hand_computation():
    runs = [
        {"ap": 70.0, "bwt": {"value": -1.0, "low": -2, "high": 0}, "num_tasks": 3},
        {"ap": 72.0, "bwt": {"value": -3.0, "low": -4, "high": -2}, "num_tasks": 3},
        {"ap": 74.0, "bwt": None, "fwt": 5.0, "complete": True, "ap_per_stage": [1.0]},
    ]
    out = combine_seeds(runs)
    # ap: mean 72, sample sd 2, df 2; t(0.975, 2) solves t / sqrt(t^2 + 2) = 0.95
    t2 = math.sqrt(2 * 0.95**2 / (1 - 0.95**2))
    half = t2 * 2.0 / math.sqrt(3)
    assert out["ap"]["mean"] == 72.0 and out["ap"]["std"] == 2.0 and out["ap"]["n_seeds"] == 3
    assert out["ap"]["low"] == pytest.approx(72.0 - half, abs=1e-9)
    assert out["ap"]["high"] == pytest.approx(72.0 + half, abs=1e-9)
    # bwt: two seeds, df 1, t = tan(0.475 pi); sd = sqrt(2)
    half1 = math.tan(0.475 * math.pi) * math.sqrt(2) / math.sqrt(2)
    assert out["bwt"]["mean"] == -2.0 and out["bwt"]["n_seeds"] == 2
    assert out["bwt"]["high"] == pytest.approx(-2.0 + half1, abs=1e-9)
    assert out["fwt"] == {"mean": 5.0, "low": None, "high": None, "std": None, "n_seeds": 1}
    assert "num_tasks" not in out and "complete" not in out and "ap_per_stage" not in out


def test_combine_seeds_of_example_results_uses_their_point_metrics():
    runs = [_crafted(seed) for seed in range(3)]
    out = combine_seeds(runs, task_names=TASKS, general_names=GENERAL)
    aps = [compute_metrics(_plain_matrix(r))["ap"] for r in runs]
    assert out["ap"]["mean"] == pytest.approx(sum(aps) / 3, rel=1e-15)
    with pytest.raises(ValueError, match="task_names"):
        combine_seeds(runs)


def test_noise_note_threshold():
    assert NOISE_MIN_EXAMPLES == 50
    assert noise_note(50) is None and noise_note({"a": 50, "b": 500}) is None
    note = noise_note(49)
    assert note is not None and "differences of a few points are noise" in note
    named = noise_note({"a": 200, "boolq": 25})
    assert named is not None and "boolq" in named and "a," not in named and "4.0 points" in named
    assert noise_note([100, 10]) is not None and noise_note([]) is None


def test_bad_arguments():
    r = _crafted()
    with pytest.raises(ValueError, match="level"):
        bootstrap_metrics(r, TASKS, level=1.5)
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_metrics(r, TASKS, n_resamples=0)
    with pytest.raises(ValueError, match="distinct"):
        bootstrap_metrics(r, TASKS, ["a"])
    with pytest.raises(ValueError, match="beyond"):
        bootstrap_metrics(r, ["a", "b"], n_resamples=5)  # stage 3 of a 2-task stream
