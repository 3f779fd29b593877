"""ProCL's math for one factor against hand computations (docs/methods/procl.md): pooling,
routing, the executing weight, γ's initialisation, consolidation, the random-routing draw."""

from __future__ import annotations

import math

import pytest
import torch

from retain.methods.procl.program import (
    FactorProgram,
    consolidate,
    dirichlet_rows,
    executing_weight,
    gamma_logit,
    masked_mean,
    pooling_weights,
)


def _program(rows: int = 8, d: int = 6, slots: int = 4, key_dim: int = 3, tau: float = 1.0):
    torch.manual_seed(0)
    program = FactorProgram(rows, d, slots, key_dim, tau, programs=True, mlp_hidden=None)
    program.reset(torch.randn(rows, d), torch.Generator().manual_seed(1))
    with torch.no_grad():
        program.keys.copy_(torch.randn_like(program.keys))  # far from uniform routing
        program.gates.copy_(torch.tensor([-1.0, 0.0, 0.5, 2.0]))
    return program


def test_masked_mean_pools_real_tokens_only() -> None:
    x = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])  # row 0 left-padded
    pooled = masked_mean(x, mask)
    torch.testing.assert_close(pooled[0], x[0, 2:].mean(dim=0))
    torch.testing.assert_close(pooled[1], x[1].mean(dim=0))
    torch.testing.assert_close(masked_mean(x, None), x.mean(dim=1))
    assert torch.equal(masked_mean(x, torch.zeros(2, 4)), torch.zeros(2, 3))  # no real token
    with pytest.raises(ValueError, match="does not match"):
        masked_mean(x, torch.ones(2, 5))


def test_routing_weights_average_the_batch_and_sum_to_the_gates() -> None:
    """α_{h,n} = mean_b softmax_n(q_{b,h}·K_{h,n}/τ) · σ(s_n): the attention of every head sums
    to 1 over slots, so Σ_n α_{h,n} = Σ_n ā_{h,n} σ(s_n), and with equal gates σ(s)."""
    program = _program(tau=0.7)
    x = torch.randn(3, 5, 6)
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 1, 1, 1, 1]])
    attention = program.attention(masked_mean(x, mask))
    assert attention.shape == (3, 4, 4)
    torch.testing.assert_close(attention.sum(dim=-1), torch.ones(3, 4))
    # by hand: one query per head from the router, dot products with that head's keys
    pooled = masked_mean(x, mask)
    q = program.router.out(torch.tanh(program.router.inp(pooled))).view(3, 4, 3)
    for b in range(3):
        for h in range(4):
            scores = torch.stack([q[b, h] @ program.keys[h, n] for n in range(4)]) / 0.7
            torch.testing.assert_close(attention[b, h], torch.softmax(scores, dim=0))
    alpha = program.alpha(x, pooling_weights(mask, x.dtype), None)
    gates = torch.sigmoid(program.gates)
    torch.testing.assert_close(alpha, attention.mean(dim=0) * gates)
    torch.testing.assert_close(alpha.sum(dim=1), (attention.mean(dim=0) * gates).sum(dim=1))
    with torch.no_grad():
        program.gates.zero_()
    alpha = program.alpha(x, pooling_weights(mask, x.dtype), None)
    torch.testing.assert_close(alpha.sum(dim=1), torch.full((4,), 0.5))


def test_executing_weight_is_gamma_w_orig_plus_routed_slots() -> None:
    """Row block h of W_exec = γ·W_orig[h] + Σ_n α_{h,n} P_n, checked entry by entry."""
    program = _program()
    memory = torch.randn(8, 6)  # M, read as 4 slots of 2 rows
    x = torch.randn(2, 3, 6)
    alpha = program.alpha(x, None, None)
    gamma = torch.sigmoid(program.gamma_logit)
    w = program.executing(memory, x, None)
    for h in range(4):
        block = gamma * program.w_orig[2 * h : 2 * h + 2]
        for n in range(4):
            block = block + alpha[h, n] * memory[2 * n : 2 * n + 2]
        torch.testing.assert_close(w[2 * h : 2 * h + 2], block)
    w.sum().backward()  # M, router, keys, gates and γ all receive gradients
    assert all(p.grad is not None for p in (program.keys, program.gates, program.gamma_logit))
    assert program.router.inp.weight.grad is not None


def test_gamma_logit_starts_at_minus_log_rms_clipped() -> None:
    w = torch.full((4, 4), 0.05)
    assert gamma_logit(w) == pytest.approx(-math.log(0.05))
    assert gamma_logit(torch.full((2, 2), 1e-9)) == 10.0
    assert gamma_logit(torch.zeros(2, 2)) == 10.0
    assert gamma_logit(torch.full((2, 2), 1e6)) == -10.0
    program = _program()
    assert float(program.gamma_logit.detach()) == pytest.approx(gamma_logit(program.w_orig))


def test_reset_starts_a_task_from_the_carried_factor() -> None:
    program = _program()
    carried = torch.randn(8, 6)
    program.reset(carried, torch.Generator().manual_seed(5))
    assert torch.equal(program.w_orig, carried)
    assert torch.equal(program.gates, torch.zeros(4))
    assert float(program.keys.abs().max()) < 0.06  # 0.01·randn
    again = _program()
    again.reset(carried, torch.Generator().manual_seed(5))
    for a, b in zip(program.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # the seeded generator alone decides the draw


def test_gate_init_sets_the_slot_gates_of_every_task_start() -> None:
    program = FactorProgram(8, 6, 4, 3, 1.0, programs=True, mlp_hidden=None, gate_init=-3.0)
    assert torch.equal(program.gates.detach(), torch.full((4,), -3.0))
    with torch.no_grad():
        program.gates.add_(1.0)  # trained during the task
    program.reset(torch.randn(8, 6), torch.Generator().manual_seed(5))
    assert torch.equal(program.gates.detach(), torch.full((4,), -3.0))


def test_default_gates_keep_a_task_start_near_the_carried_factor() -> None:
    """The reason for `gate_init = −3` (ProCLConfig's docstring): with slots that share a
    component, as a trained factor's do, s = 0 moves the first executing weight of a task far
    from the carried factor and consolidation settles M at about twice it; −3 stays close."""
    from retain.methods.procl.config import ProCLConfig

    torch.manual_seed(0)
    # 4 similar slots at a LoRA factor's scale (RMS ≈ 0.02, so γ ≈ 0.98)
    carried = 0.02 * (torch.randn(2, 6).repeat(4, 1) + 0.1 * torch.randn(8, 6))

    def drift(gate_init: float) -> tuple[float, float]:
        program = FactorProgram(
            8, 6, 4, 3, 1.0, programs=True, mlp_hidden=None, gate_init=gate_init
        )
        program.reset(carried, torch.Generator().manual_seed(1))
        x = torch.randn(2, 5, 6)
        memory = carried.clone()
        first = program.executing(memory, x, None).detach()
        for _ in range(200):  # consolidation with no task gradient: its fixed point
            consolidate(memory, program.executing(memory, x, None).detach(), 0.1)
        size = float(carried.norm())
        return float((first - carried).norm()) / size, float(memory.norm()) / size

    start, settled = drift(0.0)
    assert start > 0.3 and settled > 1.7  # the paper's s = 0
    start, settled = drift(ProCLConfig().gate_init)
    assert start < 0.05 and 0.95 < settled < 1.06


def test_consolidation_is_the_ema_rule() -> None:
    m_updated = torch.randn(8, 6)
    target = torch.randn(8, 6)
    memory = m_updated.clone()
    consolidate(memory, target, 0.1)
    torch.testing.assert_close(memory, 0.1 * m_updated + 0.9 * target, rtol=0, atol=1e-6)
    consolidate(memory, memory.clone(), 0.3)  # a fixed point stays put
    torch.testing.assert_close(memory, 0.1 * m_updated + 0.9 * target, rtol=0, atol=1e-6)


def test_executing_weight_without_w_orig_is_the_routed_slots_only() -> None:
    memory, alpha = torch.randn(8, 6), torch.rand(4, 4)
    w = executing_weight(memory, alpha, torch.randn(8, 6), 0.0)
    expected = torch.einsum("hn,nrd->hrd", alpha, memory.view(4, 2, 6)).reshape(8, 6)
    torch.testing.assert_close(w, expected, rtol=0, atol=1e-6)


def test_random_routing_draws_rows_on_the_simplex() -> None:
    a = dirichlet_rows((4, 4), torch.Generator().manual_seed(0))
    torch.testing.assert_close(a.sum(dim=1), torch.ones(4))
    assert (a > 0).all()
    b = dirichlet_rows((4, 4), torch.Generator().manual_seed(0))
    c = dirichlet_rows((4, 4), torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, c)
