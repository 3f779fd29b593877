"""Replay buffer: equal quotas, seeded fill and eviction, draws without replacement per event."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from retain.methods.replay.buffer import ReplayBuffer, draw_positions, equal_quotas


def test_equal_quotas():
    assert equal_quotas(10, [100]) == [10]
    assert equal_quotas(10, [100, 100]) == [5, 5]
    # 10 / 3 = 3 rest 1: the earliest task gets the extra sample
    assert equal_quotas(10, [100, 100, 100]) == [4, 3, 3]
    # a small task keeps all it has, the others share the room it leaves: (10 − 2) / 2 = 4
    assert equal_quotas(10, [2, 100, 100]) == [2, 4, 4]
    # 1024 / 3 = 341 rest 1
    assert equal_quotas(1024, [5000, 5000, 5000]) == [342, 341, 341]
    # everything fits
    assert equal_quotas(10, [3, 4]) == [3, 4]
    assert equal_quotas(10, [0, 50]) == [0, 10]


def pools(n_tasks: int, size: int) -> list[list[int]]:
    return [list(range(t * size, (t + 1) * size)) for t in range(n_tasks)]


def test_quotas_shrink_as_tasks_are_added():
    buf = ReplayBuffer(10, seed=0)
    p = pools(3, 20)
    added, evicted = buf.add_task(0, p[0])
    assert buf.quotas() == {0: 10} and len(added) == 10 and len(evicted) == 0
    first = set(buf.by_task[0].tolist())
    added, evicted = buf.add_task(1, p[1])
    assert buf.quotas() == {0: 5, 1: 5}
    # five of task 0's samples leave; the survivors are a subset of what was held
    assert len(evicted) == 5 and set(evicted.tolist()) <= first
    assert set(buf.by_task[0].tolist()) == first - set(evicted.tolist())
    buf.add_task(2, p[2])
    assert buf.quotas() == {0: 4, 1: 3, 2: 3}
    assert len(buf) == 10 and len(set(buf.ids.tolist())) == 10
    for t in range(3):
        assert set(buf.by_task[t].tolist()) <= set(p[t])
    assert buf.task_of.tolist() == [0] * 4 + [1] * 3 + [2] * 3


def test_fill_is_seeded():
    a, b, c = ReplayBuffer(10, seed=1), ReplayBuffer(10, seed=1), ReplayBuffer(10, seed=2)
    for buf in (a, b, c):
        for t, pool in enumerate(pools(2, 50)):
            buf.add_task(t, pool)
    assert np.array_equal(a.ids, b.ids)
    assert not np.array_equal(a.ids, c.ids)


def test_draws_without_replacement_within_an_event():
    buf = ReplayBuffer(10, seed=0)
    buf.add_task(0, range(10))
    rng = np.random.default_rng(0)
    buf.start_event()
    drawn = np.concatenate([buf.draw(3, rng) for _ in range(3)])
    assert len(set(drawn.tolist())) == 9
    # only one sample is left undrawn: the event starts a fresh pass
    again = buf.draw(3, rng)
    assert len(set(again.tolist())) == 3
    # a new event may draw anything again (with replacement across events)
    buf.start_event()
    assert len(set(buf.draw(10, rng).tolist())) == 10
    # never more than the buffer holds
    buf.start_event()
    assert len(buf.draw(25, rng)) == 10


def test_weighted_draw_follows_weights():
    rng = np.random.default_rng(0)
    allowed = np.ones(4, dtype=bool)
    pos = draw_positions(2, rng, np.array([1.0, 0.0, 0.0, 1.0]), allowed)
    assert sorted(pos.tolist()) == [0, 3]
    with pytest.raises(ValueError):
        draw_positions(5, rng, None, allowed)


def test_state_round_trip_gives_identical_draws():
    buf = ReplayBuffer(12, seed=3)
    buf.add_task(0, range(40))
    buf.add_task(1, range(40, 80))
    rng = np.random.default_rng(5)
    buf.start_event()
    buf.draw(4, rng)
    state = copy.deepcopy(buf.state_dict())
    rng_state = copy.deepcopy(rng.bit_generator.state)

    other = ReplayBuffer(1, seed=99)
    other.load_state_dict(state)
    rng2 = np.random.default_rng(0)
    rng2.bit_generator.state = rng_state
    assert np.array_equal(buf.draw(5, rng), other.draw(5, rng2))
    # the fill generator was restored too: the next task is admitted identically
    a, ea = buf.add_task(2, range(80, 120))
    b, eb = other.add_task(2, range(80, 120))
    assert np.array_equal(a, b) and np.array_equal(ea, eb)
    assert np.array_equal(buf.ids, other.ids)
