"""Paired rounds for the cost benchmarks: a ratio with its noise, and whether it decides a goal.

A cost ratio from one run of each side is as noisy as the machine: on a shared 2-core machine
one configuration's wall-clock varies by a third between rounds, so a single ratio of 0.95 or
1.05 says nothing about a 1.02 goal. Every benchmark here therefore runs both sides back to
back in each round, alternating which goes first (warm caches and drifting load then hit both
alike), takes each round's ratio, and reports the median of those paired ratios with an
interval over rounds.

The interval is the distribution-free order-statistic interval for the median (the interval
the sign test inverts): with n rounds and sorted ratios r(1) ≤ … ≤ r(n), [r(k), r(n+1-k)]
covers the median of the ratio's distribution with probability 1 − 2·P(Bin(n, ½) ≤ k − 1),
assuming only that rounds are independent draws of one distribution. k is the largest that
still reaches the requested confidence (95 %); the achieved confidence is printed. Fewer than
6 rounds cannot reach 95 % (the span of 5 rounds covers with 93.75 %), and then no verdict is
given.

Each ratio is printed for wall-clock and for CPU time (user + system of this process, all its
threads, and of the child processes it waited for), since CPU time is far less disturbed by
other jobs on the machine, and a verdict line says whether the interval lies below the goal,
above it, or contains it (undecided).
"""

from __future__ import annotations

import math
import resource
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

R = TypeVar("R")

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Timing:
    """One side's cost in one round."""

    wall: float
    cpu: float


def cpu_seconds() -> float:
    """CPU seconds so far of this process (all threads) and of its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(fn: Callable[[], R]) -> tuple[R, Timing]:
    """Call `fn` once; its result and its wall-clock and CPU seconds."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = fn()
    return result, Timing(time.perf_counter() - wall, cpu_seconds() - cpu)


def timed(fn: Callable[[], object]) -> Timing:
    """Wall-clock and CPU seconds of one call of `fn`."""
    return measure(fn)[1]


def run_rounds(
    sides: Mapping[str, Callable[[], R]],
    rounds: int,
    report: Callable[[int, str, R], None] | None = None,
) -> dict[str, list[R]]:
    """Each side once per round, back to back; even rounds in the given order, odd reversed.

    `report(round, side, result)` is called after each call (say, to print the round's line).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    names = list(sides)
    results: dict[str, list[R]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            results[name].append(sides[name]())
            if report is not None:
                report(r, name, results[name][-1])
    return results


def paired_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> list[float]:
    """Round-by-round ratios numerator[r] / denominator[r]."""
    if len(numerator) != len(denominator):
        raise ValueError(f"paired ratios need as many rounds on both sides, got "
                         f"{len(numerator)} and {len(denominator)}")
    if any(d <= 0 for d in denominator):
        raise ValueError("paired ratios need positive denominators (a round took no time?)")
    return [n / d for n, d in zip(numerator, denominator, strict=True)]


def _binomial_cdf_half(k: int, n: int) -> float:
    """P(Bin(n, 1/2) <= k)."""
    return sum(math.comb(n, i) for i in range(k + 1)) / 2**n


def median_interval(values: Sequence[float], confidence: float = CONFIDENCE
                    ) -> tuple[float, float, float, float]:
    """(median, low, high, achieved confidence): the order-statistic interval for the median.

    The widest interval, [min, max], is returned with its (lower) confidence when the number of
    values is too small to reach `confidence`.
    """
    x = sorted(values)
    n = len(x)
    if n == 0:
        raise ValueError("no rounds to summarise")
    k, achieved = 1, 1 - 2 * _binomial_cdf_half(0, n)
    for j in range(2, n // 2 + 1):
        coverage = 1 - 2 * _binomial_cdf_half(j - 1, n)
        if coverage < confidence:
            break
        k, achieved = j, coverage
    return statistics.median(x), x[k - 1], x[n - k], max(achieved, 0.0)


def min_rounds(confidence: float = CONFIDENCE) -> int:
    """The fewest rounds whose span [min, max] covers the median with `confidence`."""
    n = 1
    while 1 - 2 * _binomial_cdf_half(0, n) < confidence:
        n += 1
    return n


@dataclass(frozen=True)
class Goal:
    """A ratio's target: at most `bound` (a cost) or at least `bound` (a speed-up)."""

    bound: float
    at_most: bool = True

    def __str__(self) -> str:
        return f"{'<=' if self.at_most else '>='} {self.bound:g}"


@dataclass(frozen=True)
class Summary:
    """The median of per-round ratios and its interval over rounds."""

    median: float
    low: float
    high: float
    confidence: float
    rounds: int

    @classmethod
    def of(cls, ratios: Sequence[float], confidence: float = CONFIDENCE) -> Summary:
        median, low, high, achieved = median_interval(ratios, confidence)
        return cls(median, low, high, achieved, len(ratios))

    def verdict(self, goal: Goal, confidence: float = CONFIDENCE) -> str:
        """'met', 'missed' or 'undecided ...', from where the interval lies against the goal."""
        if self.confidence < confidence:
            return (f"undecided ({self.rounds} rounds cannot give a {100 * confidence:g} % "
                    f"interval; run at least {min_rounds(confidence)})")
        if goal.at_most:  # the bound itself meets the goal
            below, above = self.high <= goal.bound, self.low > goal.bound
        else:
            below, above = self.high < goal.bound, self.low >= goal.bound
        if below:
            return "interval below the goal: " + ("met" if goal.at_most else "missed")
        if above:
            return "interval above the goal: " + ("missed" if goal.at_most else "met")
        return f"undecided (the interval contains {goal.bound:g})"

    def __str__(self) -> str:
        return f"{self.median:.3f} [{self.low:.3f}, {self.high:.3f}]"


def ratio_lines(what: str, series: Mapping[str, Sequence[float]], goal: Goal | None,
                confidence: float = CONFIDENCE) -> list[str]:
    """A ratio's printout: one line per clock (or measure) and a verdict line.

    `series` maps a clock's name ('wall-clock', 'CPU time', 'peak memory') to its per-round
    paired ratios.
    """
    summaries = {name: Summary.of(ratios, confidence) for name, ratios in series.items()}
    first = next(iter(summaries.values()))
    target = f"goal {goal}" if goal is not None else "no goal"
    lines = [f"{what} ({target}): median of {first.rounds} paired rounds "
             f"[{100 * first.confidence:.1f} % order-statistic interval]"]
    width = max(len(name) for name in summaries)
    lines += [f"  {name:<{width}}  {summary}" for name, summary in summaries.items()]
    if goal is None:
        lines.append("  verdict: descriptive, no goal")
    elif first.confidence < confidence:  # the same for every clock
        lines.append("  verdict: " + first.verdict(goal, confidence))
    else:
        lines.append("  verdict: " + "; ".join(
            f"{name} {summary.verdict(goal, confidence)}" for name, summary in summaries.items()))
    return lines


def time_ratio_lines(what: str, numerator: Sequence[Timing], denominator: Sequence[Timing],
                     goal: Goal | None, confidence: float = CONFIDENCE) -> list[str]:
    """`ratio_lines` for the wall-clock and CPU ratios of two sides' paired timings."""
    return ratio_lines(what, {
        "wall-clock": paired_ratios([t.wall for t in numerator], [t.wall for t in denominator]),
        "CPU time": paired_ratios([t.cpu for t in numerator], [t.cpu for t in denominator]),
    }, goal, confidence)


def timing_text(t: Timing) -> str:
    """'12.34 s wall, 11.98 s CPU'."""
    return f"{t.wall:.3f} s wall, {t.cpu:.3f} s CPU"
