"""MSSR memory model: each formula checked against a hand computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from retain.config import MSSRConfig
from retain.methods.replay.memory import (
    MemoryState,
    decay_strength,
    difficulty,
    ema_update,
    hazard,
    normalise_loss,
    quantile_bounds,
    review_stability,
    sampling_probabilities,
)

CFG = MSSRConfig()


def test_ema_update():
    # 0.95 * 2.0 + 0.05 * 4.0 = 1.9 + 0.2 = 2.1
    assert ema_update(np.array([2.0]), np.array([4.0]), 0.95)[0] == pytest.approx(2.1)


def test_quantile_normalisation():
    values = np.arange(101, dtype=float)  # 0, 1, …, 100
    # np.quantile (linear): Q05 at position 0.05 * 100 = 5 -> 5.0; Q95 at 95 -> 95.0
    q_low, q_high = quantile_bounds(values, 0.05, 0.95)
    assert (q_low, q_high) == pytest.approx((5.0, 95.0))
    # ℓ̂ = clip((ℓ − 5) / 90, 0, 1): 50 -> 0.5, 20 -> 15/90 = 0.1667, 0 -> clip(−5/90) = 0,
    # 100 -> clip(95/90) = 1
    l_hat = normalise_loss(np.array([50.0, 20.0, 0.0, 100.0]), q_low, q_high)
    assert l_hat == pytest.approx([0.5, 15 / 90, 0.0, 1.0])
    # all losses equal: no range, every sample gets the neutral 0.5
    assert normalise_loss(np.array([3.0, 3.0]), 3.0, 3.0) == pytest.approx([0.5, 0.5])


def test_difficulty():
    # φ(ℓ̂) = 1 / (1 + exp(−10 (ℓ̂ − 0.5))): φ(0.5) = 0.5; φ(1) = 1 / (1 + e^−5) = 0.9933071;
    # φ(0) = 1 / (1 + e^5) = 0.0066929
    phi = difficulty(np.array([0.5, 1.0, 0.0]), CFG.k, CFG.c)
    assert phi == pytest.approx([0.5, 0.9933071491, 0.0066928509])


def test_decay_over_units():
    # φ = 0.5, S = 1: h = (0.01 + 0.2 * 0.5) / 1 = 0.11; Δ = 3 units: m = exp(−0.33) = 0.7189237
    h = hazard(np.array([0.5]), np.array([1.0]), CFG.alpha, CFG.gamma_d)
    assert h[0] == pytest.approx(0.11)
    assert decay_strength(np.array([1.0]), h, np.array([3.0]))[0] == pytest.approx(0.7189237334)
    # S = 2 halves the hazard: h = 0.055, m after 3 units from 0.8 = 0.8 * exp(−0.165)
    h2 = hazard(np.array([0.5]), np.array([2.0]), CFG.alpha, CFG.gamma_d)
    assert decay_strength(np.array([0.8]), h2, np.array([3.0]))[0] == pytest.approx(
        0.8 * math.exp(-0.165)
    )


def test_review_update_of_stability():
    # S = 1, m_before = 0.5, Δt = 2 units:
    # gain = 0.05 * (10 − 1)^0.5 * exp(−0.01 * 2) * (1 − 0.5)^1 = 0.05 * 3 * 0.9801987 * 0.5
    #      = 0.0735149 -> S = 1.0735149
    s = review_stability(
        np.array([1.0]),
        np.array([0.5]),
        np.array([2.0]),
        CFG.eta_s,
        CFG.beta_s,
        CFG.rho,
        CFG.gamma_s,
        CFG.s_min,
        CFG.s_max,
    )
    assert s[0] == pytest.approx(1.0735149005)
    # S_max is a fixed point, and the clip keeps S inside [1, 10]
    s = review_stability(
        np.array([10.0, 9.999]),
        np.array([0.0, 0.0]),
        np.array([0.0, 0.0]),
        1.0,
        CFG.beta_s,
        CFG.rho,
        CFG.gamma_s,
        CFG.s_min,
        CFG.s_max,
    )
    assert s == pytest.approx([10.0, 10.0])


def test_sampler_probabilities():
    m = np.array([1.0, 0.5, 0.25])
    # ζ = 1: weights 1/m = [1, 2, 4], sum 7 -> [1/7, 2/7, 4/7]
    assert sampling_probabilities(m, 1.0) == pytest.approx([1 / 7, 2 / 7, 4 / 7])
    # ζ = 0: uniform
    assert sampling_probabilities(m, 0.0) == pytest.approx([1 / 3] * 3)
    # ζ = 2: weights [1, 4, 16], sum 21
    assert sampling_probabilities(m, 2.0) == pytest.approx([1 / 21, 4 / 21, 16 / 21])


def test_observe_starts_then_reviews():
    mem = MemoryState(CFG, size=6)
    mem.track(np.array([0, 1, 2, 3]))
    mem.observe(np.array([0, 1, 5]), np.array([2.0, 4.0, 9.0]), now=0.0)
    # first sight: ℓ̃ = first loss, m = 1, S = 1, t* = 0; id 5 is untracked and ignored
    assert mem.loss[[0, 1]] == pytest.approx([2.0, 4.0])
    assert mem.started.tolist() == [True, True, False, False, False, False]
    assert not mem.has_loss[5]
    mem.observe(np.array([0]), np.array([3.0]), now=2.0)
    # ℓ̃ = 0.95 * 2 + 0.05 * 3 = 2.05. No refresh yet: cached Q05 = Q95 = 0, so ℓ̂ = 0.5,
    # φ = 0.5, h = 0.11; m_before = exp(−0.11 * 2) = 0.8025188;
    # S = 1 + 0.05 * 3 * exp(−0.02) * (1 − 0.8025188) = 1.0290356; then m = 1, t* = 2
    assert mem.loss[0] == pytest.approx(2.05)
    assert mem.s[0] == pytest.approx(1.0290356218)
    assert mem.m[0] == 1.0
    assert mem.t_star[0] == 2.0
    assert mem.s[1] == 1.0 and mem.t_star[1] == 0.0


def test_refresh_decays_with_quantiles():
    mem = MemoryState(CFG, size=4)
    mem.track(np.arange(4))
    mem.observe(np.arange(4), np.array([1.0, 2.0, 3.0, 4.0]), now=0.0)
    mem.refresh(5.0)
    # Q05, Q95 of [1, 2, 3, 4] (linear): 1 + 0.15 = 1.15 and 3 + 0.85 = 3.85
    assert (mem.q_low, mem.q_high) == pytest.approx((1.15, 3.85))
    # id 0: ℓ̂ = 0 -> φ = 0.0066929 -> h = 0.01 + 0.2 * 0.0066929 = 0.0113386,
    #       m = exp(−5 * 0.0113386) = 0.9448842
    # id 3: ℓ̂ = 1 -> φ = 0.9933071 -> h = 0.2086614, m = exp(−5 * 0.2086614) = 0.3522877
    assert mem.m[0] == pytest.approx(0.9448842451)
    assert mem.m[3] == pytest.approx(0.3522876854)
    # lazy: a second refresh at the same time changes nothing
    before = mem.m.copy()
    mem.refresh(5.0)
    assert mem.m == pytest.approx(before)
    assert mem.refresh_due(14.9) is False and mem.refresh_due(15.0) is True


def test_untrack_and_state_round_trip():
    mem = MemoryState(CFG, size=3)
    mem.track(np.arange(3))
    mem.observe(np.arange(3), np.array([1.0, 2.0, 3.0]), now=0.0)
    mem.refresh(4.0)
    mem.untrack(np.array([1]))
    assert not mem.tracked[1] and not mem.started[1] and mem.m[1] == 1.0
    other = MemoryState(CFG)
    other.load_state_dict(mem.state_dict())
    for name in ("m", "s", "t_star", "t_m", "loss", "has_loss", "started", "tracked"):
        assert np.array_equal(getattr(other, name), getattr(mem, name))
    assert (other.q_low, other.q_high, other.last_refresh) == (mem.q_low, mem.q_high, 4.0)


def test_ensure_size_grows_untracked():
    mem = MemoryState(CFG, size=2)
    mem.ensure_size(5)
    assert mem.size == 5 and not mem.tracked[2:].any() and (mem.m == 1.0).all()
