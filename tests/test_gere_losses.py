"""GeRe's losses against direct implementations of docs/methods/gere.md's formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from retain.methods.gere.losses import (
    feature_distance,
    kl_loss,
    kl_loss_topk,
    tm_loss,
    topk_teacher,
    weighted,
)
from retain.methods.gere.targets import (
    NEGATIVE,
    NEUTRAL,
    POSITIVE,
    Moments,
    classify,
    pack_states,
    thresholds,
    unpack_states,
)


def _direct_tm(a: torch.Tensor, a0: torch.Tensor, mean: np.ndarray, std: np.ndarray):
    """docs/methods/gere.md, literally, in fp32: states of the base activation, per-state
    hinge, normalised by the number of violating elements; σ = 0 counts as neutral."""
    tau_pos = torch.from_numpy(mean + std).float()
    tau_neg = torch.from_numpy(mean - std).float()
    spread = tau_pos > tau_neg
    pos = (a0 >= tau_pos) & spread
    neg = (a0 <= tau_neg) & spread
    neu = ~pos & ~neg
    loss = (
        pos * torch.relu(tau_pos - a)
        + neg * torch.relu(a - tau_neg)
        + neu * (torch.relu(a - tau_pos) + torch.relu(tau_neg - a))
    )
    return loss.sum() / ((loss != 0).sum() + 1e-8)


def _activations(seed: int = 0, tokens: int = 300, dim: int = 37) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a0 = torch.randn(tokens, dim, generator=g) * torch.linspace(0.1, 3.0, dim) + 5.0
    a0[:, 3] = 1.25  # a dimension with σ = 0
    return a0


def _cache_states(a0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Moments]:
    """States as the plugin stores them: fp64 moments in two batches, packed, unpacked."""
    moments = Moments(a0.shape[1])
    moments.update(a0[:120])
    moments.update(a0[120:])
    tau_pos, tau_neg = thresholds(moments.mean, moments.std)
    packed = pack_states(classify(a0, tau_pos, tau_neg))
    assert packed.dtype == torch.uint8 and packed.shape == (a0.shape[0], 8)  # ceil(37 / 5)
    return unpack_states(packed, a0.shape[1]), tau_pos, tau_neg, moments


def test_moments_are_the_fp64_population_statistics() -> None:
    a0 = _activations().double() + 1e4  # a large offset: E[x²] − μ² would cancel badly
    moments = Moments(a0.shape[1])
    for part in torch.split(a0, 70):
        moments.update(part)
    ref = a0.numpy()
    np.testing.assert_allclose(moments.mean.numpy(), ref.mean(0), rtol=0, atol=1e-9)
    np.testing.assert_allclose(moments.std.numpy(), ref.std(0), rtol=1e-9, atol=1e-9)
    assert float(moments.std[3]) == 0.0


def test_packing_round_trips_every_state() -> None:
    states = torch.randint(0, 3, (50, 23), dtype=torch.uint8)
    packed = pack_states(states)
    assert packed.shape == (50, 5)
    torch.testing.assert_close(unpack_states(packed, 23), states, rtol=0, atol=0)


def test_sigma_zero_is_neutral() -> None:
    a0 = _activations()
    states, tau_pos, tau_neg, _ = _cache_states(a0)
    assert float(tau_pos[3]) == float(tau_neg[3]) == 1.25
    assert (states[:, 3] == NEUTRAL).all()
    assert (states == POSITIVE).any() and (states == NEGATIVE).any() and (states == NEUTRAL).any()


def test_tm_from_the_compact_cache_equals_the_direct_fp32_formula() -> None:
    a0 = _activations()
    states, tau_pos, tau_neg, moments = _cache_states(a0)
    g = torch.Generator().manual_seed(1)
    a_ours = (a0 + 0.7 * torch.randn(a0.shape, generator=g)).requires_grad_(True)
    a_ref = a_ours.detach().clone().requires_grad_(True)
    ours, violations = tm_loss(a_ours, states, tau_pos, tau_neg)
    ref = _direct_tm(a_ref, a0, moments.mean.numpy(), moments.std.numpy())
    assert int(violations) > 100
    assert float(ours.detach()) == float(ref.detach()) and float(ours.detach()) > 0
    ours.backward()
    ref.backward()
    torch.testing.assert_close(a_ours.grad, a_ref.grad, rtol=0, atol=0)
    assert a_ours.grad.abs().sum() > 0


def test_tm_is_exactly_zero_at_the_base_activations() -> None:
    a0 = _activations()
    states, tau_pos, tau_neg, _ = _cache_states(a0)
    a = a0.clone().requires_grad_(True)
    loss, violations = tm_loss(a, states, tau_pos, tau_neg)
    assert float(loss.detach()) == 0.0 and int(violations) == 0
    loss.backward()
    assert float(a.grad.abs().sum()) == 0.0


def test_normalisation_counts_only_violating_elements() -> None:
    """100 elements, 3 of them violate by 1, 2 and 3: the loss is their mean, 2."""
    tau_pos, tau_neg = torch.ones(4), -torch.ones(4)
    states = torch.full((25, 4), NEUTRAL, dtype=torch.uint8)
    states[0, 0], states[1, 1] = POSITIVE, NEGATIVE
    a = torch.zeros(25, 4)
    a[0, 0] = 0.0  # positive, must be ≥ 1: violates by 1
    a[1, 1] = 1.0  # negative, must be ≤ −1: violates by 2
    a[2, 2] = 4.0  # neutral, must be in [−1, 1]: violates by 3
    a[3, 3] = 5.0
    states[3, 3] = POSITIVE  # positive and above τ⁺: fine
    loss, violations = tm_loss(a, states, tau_pos, tau_neg)
    assert int(violations) == 3
    assert float(loss) == pytest.approx(2.0, abs=1e-6)


def test_dy_makes_the_two_terms_equal_in_value() -> None:
    aux = torch.tensor(0.0137, requires_grad=True)
    ce = torch.tensor(2.71)
    value, w = weighted(aux * 1.0, ce, "dy")
    assert float(value.detach()) == pytest.approx(float(ce), rel=1e-6)
    assert w == pytest.approx(2.71 / (0.0137 + 1e-8))
    value.backward()
    assert float(aux.grad) == pytest.approx(w)  # w is a constant, not differentiated
    fixed, w100 = weighted(aux * 1.0, ce, 100.0)
    assert w100 == 100.0 and float(fixed.detach()) == pytest.approx(1.37)


def test_dy_with_a_zero_auxiliary_loss_adds_nothing_and_no_nan() -> None:
    h = torch.zeros(3, 4, requires_grad=True)
    aux = torch.relu(h - 1.0).sum()  # 0, with a graph
    value, w = weighted(aux, torch.tensor(3.0), "dy")
    total = value + (h * 2).sum()
    total.backward()
    assert float(value) == 0.0 and w == 0.0
    assert torch.isfinite(h.grad).all() and (h.grad == 2).all()


def test_kl_is_zero_for_identical_models_and_positive_otherwise() -> None:
    logits = torch.randn(7, 50)
    assert float(kl_loss(logits, logits.clone())) == 0.0
    other = logits + torch.randn(7, 50)
    p = F.softmax(logits / 2, -1)
    direct = (p * (F.log_softmax(logits / 2, -1) - F.log_softmax(other / 2, -1))).sum(-1).mean()
    assert float(kl_loss(other, logits)) == pytest.approx(float(direct), rel=1e-5)
    values, ids = topk_teacher(logits, 5)
    assert float(kl_loss_topk(logits, values, ids)) == pytest.approx(0.0, abs=1e-6)


def test_topk_kl_is_the_kl_of_the_coarsened_distributions() -> None:
    g = torch.Generator().manual_seed(3)
    teacher, student = torch.randn(6, 40, generator=g), torch.randn(6, 40, generator=g)
    values, ids = topk_teacher(teacher, 40)  # every id: no tail, the full KL
    full = kl_loss(student, teacher)
    assert float(kl_loss_topk(student, values, ids)) == pytest.approx(float(full), rel=1e-5)
    values, ids = topk_teacher(teacher, 8)
    p, q = F.softmax(teacher / 2, -1), F.softmax(student / 2, -1)
    pk, qk = p.gather(-1, ids), q.gather(-1, ids)
    p_all = torch.cat([pk, 1 - pk.sum(-1, keepdim=True)], -1).double()
    q_all = torch.cat([qk, 1 - qk.sum(-1, keepdim=True)], -1).double()
    direct = (p_all * (p_all.log() - q_all.log())).sum(-1).mean()
    assert float(kl_loss_topk(student, values, ids)) == pytest.approx(float(direct), rel=1e-4)


def test_feature_distances() -> None:
    h, h0 = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[0.0, 2.0], [5.0, 4.0]])
    assert float(feature_distance(h, h0, 1)) == pytest.approx(0.75)
    assert float(feature_distance(h, h0, 2)) == pytest.approx(1.25)
    assert float(feature_distance(h, h.clone(), 2)) == 0.0
