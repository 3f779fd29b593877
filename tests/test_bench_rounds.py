"""The benchmarks' paired-rounds machinery (benchmarks/rounds.py) on synthetic timings."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "rounds.py"
_spec = importlib.util.spec_from_file_location("bench_rounds", _PATH)
assert _spec is not None and _spec.loader is not None
rounds = importlib.util.module_from_spec(_spec)
sys.modules["bench_rounds"] = rounds  # dataclasses look their module up
_spec.loader.exec_module(rounds)


def test_order_alternates_between_rounds():
    calls: list[str] = []
    sides = {"a": lambda: calls.append("a") or 1, "b": lambda: calls.append("b") or 2}
    seen: list[tuple[int, str, int]] = []
    out = rounds.run_rounds(sides, 3, report=lambda r, n, x: seen.append((r, n, x)))
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert out == {"a": [1, 1, 1], "b": [2, 2, 2]}
    assert [s[:2] for s in seen] == [(0, "a"), (0, "b"), (1, "b"), (1, "a"), (2, "a"), (2, "b")]
    with pytest.raises(ValueError, match="rounds must be at least 1"):
        rounds.run_rounds(sides, 0)


def test_interval_is_the_sign_test_order_statistics():
    # n = 10: k = 2 covers 1 - 2 * (1 + 10) / 1024 = 0.9785; k = 3 only 1 - 2 * 56 / 1024
    values = [7.0, 1.0, 10.0, 3.0, 2.0, 9.0, 5.0, 4.0, 8.0, 6.0]
    median, low, high, achieved = rounds.median_interval(values)
    assert (median, low, high) == (5.5, 2.0, 9.0)
    assert achieved == pytest.approx(1 - 22 / 1024)
    # at 80 % the third order statistics are allowed (0.8906)
    _, low, high, achieved = rounds.median_interval(values, 0.8)
    assert (low, high, achieved) == (3.0, 8.0, pytest.approx(1 - 112 / 1024))


def test_too_few_rounds_give_the_span_and_no_verdict():
    assert rounds.min_rounds(0.95) == 6
    five = rounds.Summary.of([1.0, 1.1, 0.9, 1.05, 0.95])
    assert (five.low, five.high, five.confidence) == (0.9, 1.1, pytest.approx(0.9375))
    verdict = five.verdict(rounds.Goal(2.0))
    assert verdict.startswith("undecided") and "at least 6" in verdict
    six = rounds.Summary.of([1.0, 1.1, 0.9, 1.05, 0.95, 1.02])
    assert six.confidence == pytest.approx(0.96875)
    assert six.verdict(rounds.Goal(2.0)) == "interval below the goal: met"


@pytest.mark.parametrize(("ratios", "goal", "expected"), [
    ([0.97, 0.99, 1.00, 1.01, 0.98, 1.00], rounds.Goal(1.02), "below the goal: met"),
    ([0.97, 0.99, 1.00, 1.02, 0.98, 1.00], rounds.Goal(1.02), "below the goal: met"),
    ([1.03, 1.05, 1.04, 1.08, 1.06, 1.03], rounds.Goal(1.02), "above the goal: missed"),
    ([0.95, 1.05, 1.00, 1.04, 0.99, 1.01], rounds.Goal(1.02), "undecided"),
    ([2.9, 3.4, 3.2, 3.3, 3.1, 3.5], rounds.Goal(3.0, at_most=False), "undecided"),
    ([3.0, 3.4, 3.2, 3.3, 3.1, 3.5], rounds.Goal(3.0, at_most=False), "above the goal: met"),
    ([2.0, 2.4, 2.2, 2.3, 2.1, 2.5], rounds.Goal(3.0, at_most=False), "below the goal: missed"),
])
def test_verdict_from_where_the_interval_lies(ratios, goal, expected):
    assert expected in rounds.Summary.of(ratios).verdict(goal)


def test_interval_covers_the_median_at_its_stated_rate():
    """Skewed synthetic ratios with a known median: the interval covers it as often as stated
    (1 - 22/1024 = 97.85 % at 10 rounds, whatever the continuous distribution)."""
    rng = np.random.default_rng(0)
    truth, scale, reps = 1.02, 0.05, 4000
    covered = 0
    for _ in range(reps):
        # exp is monotone, so the median is truth * exp(median of Exp(scale) - scale ln 2) = truth
        ratios = truth * np.exp(rng.exponential(scale, size=10) - scale * np.log(2))
        _, low, high, achieved = rounds.median_interval(list(ratios))
        covered += low <= truth <= high
    assert achieved == pytest.approx(1 - 22 / 1024)
    assert abs(covered / reps - achieved) < 0.01  # binomial SD of the rate: 0.0023


def test_paired_ratios_cancel_load_that_changes_between_rounds():
    """Load that slows both sides of a round alike (a 0.7-1.6x swing) leaves the paired ratio
    exact, where the ratio of per-side medians is off."""
    load = [1.0, 1.6, 0.7, 1.3, 1.5, 0.8]
    base = [10.0 * x for x in load]
    ours = [10.5 * x for x in load]
    ratios = rounds.paired_ratios(ours, base)
    summary = rounds.Summary.of(ratios)
    assert summary.low == pytest.approx(1.05) and summary.high == pytest.approx(1.05)
    shuffled = rounds.paired_ratios(ours, base[1:] + base[:1])
    assert rounds.Summary.of(shuffled).high - rounds.Summary.of(shuffled).low > 0.5


def test_paired_ratios_reject_bad_input():
    with pytest.raises(ValueError, match="as many rounds on both sides"):
        rounds.paired_ratios([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="positive denominators"):
        rounds.paired_ratios([1.0], [0.0])
    with pytest.raises(ValueError, match="no rounds"):
        rounds.median_interval([])


def test_cpu_time_counts_waited_for_children():
    burn = ("import time\nt = time.process_time()\n"
            "while time.process_time() - t < 0.3: pass")
    _, timing = rounds.measure(lambda: subprocess.run([sys.executable, "-c", burn], check=True))
    assert timing.cpu >= 0.3  # the child's 0.3 s of CPU, whatever the machine's load
    assert timing.wall > 0


def test_printout_has_both_clocks_and_a_verdict_line():
    fast = [rounds.Timing(10.0 * x, 9.0 * x) for x in (1.0, 1.2, 0.9, 1.1, 1.0, 1.3)]
    slow = [rounds.Timing(t.wall * 1.1, t.cpu * 1.0) for t in fast]
    lines = rounds.time_ratio_lines("b / a", slow, fast, rounds.Goal(1.02))
    assert lines[0].startswith("b / a (goal <= 1.02): median of 6 paired rounds [96.9 %")
    assert lines[1].split() == ["wall-clock", "1.100", "[1.100,", "1.100]"]
    assert lines[2].split() == ["CPU", "time", "1.000", "[1.000,", "1.000]"]
    assert lines[3] == ("  verdict: wall-clock interval above the goal: missed; "
                        "CPU time interval below the goal: met")
    assert rounds.ratio_lines("x", {"peak memory": [1.0] * 6}, None)[-1].endswith("no goal")


def test_too_few_rounds_say_so_once():
    lines = rounds.ratio_lines("x", {"wall-clock": [1.0, 1.1], "CPU time": [1.0, 1.0]},
                               rounds.Goal(1.02))
    assert lines[-1] == ("  verdict: undecided (2 rounds cannot give a 95 % interval; "
                         "run at least 6)")
