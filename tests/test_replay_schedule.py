"""Replay triggers and schedules: event times, λ(t), and the trigger rules on crafted inputs."""

from __future__ import annotations

import math

import pytest

from retain.methods.replay.config import ReplayConfig
from retain.methods.replay.schedule import (
    AccuracyTrigger,
    ExpandingSchedule,
    FixedSchedule,
    LossTrigger,
    expanding_event_times,
    merge_windows,
    replay_fraction,
    replay_rows,
    unit_steps_for,
)


def test_unit_steps():
    cfg = ReplayConfig()
    assert unit_steps_for(cfg, 2000) == 100  # 5 % of the task
    assert unit_steps_for(cfg, 30) == 2  # round(1.5) = 2 (halves round up)
    assert unit_steps_for(cfg, 5) == 1  # round(0.25) = 0 -> at least 1
    assert unit_steps_for(ReplayConfig(unit_steps=7), 2000) == 7


def test_expanding_event_times_match_the_paper():
    # Δ1 = 1; Δ2 = 1 * (1 + 0.5 e^−0.05) = 1.47561; Δ3 = Δ2 (1 + 0.5 e^−0.1) = 2.14321;
    # Δ4 = Δ3 (1 + 0.5 e^−0.15) = 3.06555; Δ5 = Δ4 (1 + 0.5 e^−0.2) = 4.32048;
    # Δ6 = Δ5 (1 + 0.5 e^−0.25) = 6.00288 -> cumulative 1, 2.4756, 4.6188, 7.6844, 12.0049, 18.0077
    times = expanding_event_times(1.0, 0.5, 0.05, until=20.0)
    assert times == pytest.approx([1.0, 2.48, 4.62, 7.68, 12.0, 18.0], abs=0.01)
    assert times == pytest.approx([1.0, 2.475615, 4.618825, 7.684375, 12.004854, 18.007730])
    # the next one (26.23) is past a 20-unit task
    assert len(expanding_event_times(1.0, 0.5, 0.05, until=27.0)) == 7


def test_expanding_schedule_event_steps():
    sched = ExpandingSchedule(first=1.0, eta_p=0.5, rho_p=0.05, event_units=1.0)
    # 2000 steps, unit 100: starts round(100 t_k) = 100, 248, 462, 768, 1200, 1801
    sched.start_task(2000, 100)
    assert sched.windows == [
        (100, 200),
        (248, 348),
        (462, 562),
        (768, 868),
        (1200, 1300),
        (1801, 1901),
    ]
    # 200 steps, unit 10: 10, 24.76 -> 25, 46.19 -> 46, 76.84 -> 77, 120.05 -> 120, 180.08 -> 180
    sched.start_task(200, 10)
    assert [w[0] for w in sched.windows] == [10, 25, 46, 77, 120, 180]
    assert sched.active(9) is None and sched.active(10) == (10, 20)
    assert sched.active(19) == (10, 20) and sched.active(20) is None
    # the schedule restarts at each task
    sched.start_task(200, 10)
    assert sched.windows[0] == (10, 20)


def test_fixed_schedule():
    sched = FixedSchedule(interval_units=3.0, event_units=1.0)
    sched.start_task(200, 10)  # events at units 3, 6, …, 18, one unit (10 steps) each
    assert sched.windows == [(30, 40), (60, 70), (90, 100), (120, 130), (150, 160), (180, 190)]
    every = FixedSchedule(interval_units=0.0, event_units=1.0)
    every.start_task(200, 10)
    assert every.windows == [(0, 200)]
    # events closer than their length merge into one
    dense = FixedSchedule(interval_units=0.5, event_units=1.0)
    dense.start_task(100, 10)
    assert dense.windows == [(5, 100)]
    assert merge_windows([(5, 8), (1, 3), (2, 4)]) == [(1, 4), (5, 8)]


def test_replay_fraction_over_time():
    # λ(t) = 0.05 + 0.25 e^(−1e−5 t): t = 0 -> 0.3; t = 22000 -> 0.05 + 0.25 e^−0.22 = 0.2506297;
    # t = 100000 -> 0.05 + 0.25 e^−1 = 0.1419699
    assert replay_fraction(0, 0.3, 0.05, 1e-5) == pytest.approx(0.3)
    assert replay_fraction(22000, 0.3, 0.05, 1e-5) == pytest.approx(0.2506296995)
    assert replay_fraction(100000, 0.3, 0.05, 1e-5) == pytest.approx(0.1419698603)
    assert replay_fraction(1e9, 0.3, 0.05, 1e-5) == pytest.approx(0.05)


def test_replay_rows():
    assert replay_rows(0.3, 8) == 2  # 2.4
    assert replay_rows(0.3, 16) == 5  # 4.8
    assert replay_rows(0.3, 5) == 2  # 1.5 rounds up
    assert replay_rows(0.05, 8) == 1  # 0.4 -> at least one row
    assert replay_rows(1.0, 8) == 8
    assert replay_rows(0.0, 8) == 0


def test_loss_trigger_rule():
    trig = LossTrigger(decay=0.9, delta=0.2, event_units=1.0)
    trig.start_task(100, 10)
    # step 1: first loss sets the EMA to 1.0
    assert trig.observe(1, 1.0) is None and trig.ema == pytest.approx(1.0)
    # step 2: 1.1 <= 1.2 * 1.0, no event; EMA = 0.9 + 0.11 = 1.01
    assert trig.observe(2, 1.1) is None and trig.ema == pytest.approx(1.01)
    # step 3: 1.3 > 1.2 * 1.01 = 1.212 -> event over the next unit: steps [3, 13)
    assert trig.observe(3, 1.3) == (3, 13)
    # EMA = 0.909 + 0.13 = 1.039
    assert trig.ema == pytest.approx(1.039)
    # step 10: a spike inside the event / cool-down opens nothing (last event ends at 13 > 0)
    assert trig.observe(10, 5.0) is None
    # EMA = 0.9 * 1.039 + 0.5 = 1.4351; step 22: 13 > 22 − 10 = 12, still cooling down
    assert trig.observe(22, 5.0) is None
    # EMA = 0.9 * 1.4351 + 0.5 = 1.79159; step 23: 13 <= 13, and 5 > 1.2 * 1.79159 -> event
    assert trig.observe(23, 5.0) == (23, 33)
    assert trig.windows == [(3, 13), (23, 33)]
    # no buffer yet: the EMA still learns, but no event starts
    quiet = LossTrigger(decay=0.9, delta=0.2, event_units=1.0)
    quiet.start_task(100, 10)
    quiet.observe(1, 1.0, can_start=False)
    assert quiet.observe(2, 9.0, can_start=False) is None and quiet.windows == []
    # an event cut at the end of the task; none after the last step
    assert trig.observe(95, 100.0) == (95, 100)
    late = LossTrigger(decay=0.9, delta=0.2, event_units=1.0)
    late.start_task(100, 10)
    late.observe(99, 1.0)
    assert late.observe(100, 9.0) is None
    assert late.observe(101, math.nan) is None


def test_accuracy_trigger_rule():
    trig = AccuracyTrigger(probe_every_units=1.0, drop=2.0, event_units=1.0)
    trig.start_task(100, 10)  # probe every 10 steps
    assert not trig.probe_due(5) and trig.probe_due(10) and not trig.probe_due(0)
    trig.set_best(0, 80.0)
    # 80 − 79 = 1 point: no event; probing again at the same step is not due
    assert trig.observe(10, {0: 79.0}) == ([], None)
    assert not trig.probe_due(10) and trig.probe_due(20)
    # 80 − 77.9 = 2.1 > 2 points -> event [20, 30)
    assert trig.observe(20, {0: 77.9}) == ([0], (20, 30))
    # still inside the event: the drop is reported, no new event
    assert trig.observe(25, {0: 50.0}) == ([0], None)
    # the best moves up with better probes; a new task starts at its own probe, no drop
    assert trig.observe(40, {0: 90.0, 1: 60.0}) == ([], None)
    assert trig.best == {0: 90.0, 1: 60.0}
    # 90 − 87.5 = 2.5 -> event
    assert trig.observe(50, {0: 87.5, 1: 60.0}) == ([0], (50, 60))
