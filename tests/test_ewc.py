"""EWC: the diagonal empirical Fisher against hand computations, the penalty's gradient, online
mode, resume state, and a run with `fixed` replay (docs/methods/ewc.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from retain.config import load_config
from retain.methods.ewc.fisher import empirical_fisher, penalty
from retain.methods.ewc.plugin import EWCPlugin
from retain.train.devices import token_losses
from retain.train.loop import ContinualTrainer, run
from tests.test_engine import TINY


def test_fisher_is_the_mean_of_squared_minibatch_gradients_of_a_linear_model() -> None:
    """loss(w) = mean((x·w − y)²) has gradient (2/n) Σ (x·w − y) x: Fisher by hand."""
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(3))
    batches = [(torch.randn(4, 3), torch.randn(4)) for _ in range(5)]
    fisher = empirical_fisher({"w": w}, batches, lambda b: ((b[0] @ w - b[1]) ** 2).mean())
    by_hand = torch.zeros(3)
    for x, y in batches:
        grad = 2 / len(y) * ((x @ w.detach() - y)[:, None] * x).sum(0)
        by_hand += grad**2
    assert torch.allclose(fisher["w"], by_hand / len(batches), rtol=1e-5)
    assert w.grad is None  # autograd.grad: the optimizer's .grad is never touched


def test_a_fisher_split_over_processes_adds_up_to_the_whole() -> None:
    torch.manual_seed(1)
    w = torch.nn.Parameter(torch.randn(2))
    batches = [(torch.randn(3, 2), torch.randn(3)) for _ in range(5)]
    loss = lambda b: ((b[0] @ w - b[1]) ** 2).mean()  # noqa: E731
    whole = empirical_fisher({"w": w}, batches, loss)
    seen: list[list[torch.Tensor]] = []
    empirical_fisher({"w": w}, batches[1::2], loss, lambda t: seen.append(t) or t)
    other = seen[0]  # what rank 1 contributes to the all-reduce: its sums and its count
    added = empirical_fisher({"w": w}, batches[0::2], loss,
                             lambda t: [a + b for a, b in zip(t, other, strict=True)])
    assert torch.allclose(added["w"], whole["w"], rtol=1e-6)


def test_the_penalty_and_its_gradient() -> None:
    torch.manual_seed(2)
    theta = torch.nn.Parameter(torch.randn(4))
    pairs = [({"t": torch.rand(4)}, {"t": torch.randn(4)}) for _ in range(2)]
    value = penalty({"t": theta, "other": torch.nn.Parameter(torch.ones(1))}, pairs)
    expected = sum((f["t"] * (theta.detach() - a["t"]) ** 2).sum() for f, a in pairs)
    assert float(value.detach()) == pytest.approx(float(expected), rel=1e-6)
    (grad,) = torch.autograd.grad(3.0 * value, theta)
    by_hand = sum(2 * 3.0 * f["t"] * (theta.detach() - a["t"]) for f, a in pairs)
    assert torch.allclose(grad, by_hand, rtol=1e-5)
    assert float(penalty({"t": theta}, [])) == 0.0


def _trainer(tmp_path: Path, *extra: str) -> ContinualTrainer:
    return ContinualTrainer(load_config(None, [*TINY, f"output_dir={tmp_path}",
                                              "methods=[ewc]", *extra]))


def test_the_plugins_fisher_on_a_tiny_model_matches_a_direct_computation(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, "ewc.fisher_batch_size=3", "ewc.fisher_max_rows=7")
    ctx, plugin = trainer.parts.ctx, trainer.parts.plugins[0]
    assert isinstance(plugin, EWCPlugin)
    ctx.task_index = 0
    plugin.on_task_end(ctx, trainer.parts.stream.tasks[0])
    ((fisher, anchor),) = plugin.consolidated
    model = ctx.inner_model
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert set(fisher) == set(named) and all("lora" in n for n in named)  # the adapter only
    rows = ctx.task_samples[0][:7]
    model.eval()
    by_hand = {n: torch.zeros_like(p) for n, p in named.items()}
    for chunk in (rows[0:3], rows[3:6], rows[6:7]):
        batch = ctx.rows(chunk)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        nll, counts = token_losses(logits, batch.labels)
        grads = torch.autograd.grad(nll.sum() / counts.sum(), list(named.values()))
        for n, g in zip(named, grads, strict=True):
            by_hand[n] += g**2 / 3
    for n in named:
        assert torch.allclose(fisher[n], by_hand[n], rtol=1e-4, atol=1e-12), n
        assert torch.equal(anchor[n], named[n].detach())
    assert sum(float(f.sum()) for f in fisher.values()) > 0
    assert ctx.counters["extra_forward_passes"] == 3
    assert all(p.grad is None for p in named.values())


def test_online_mode_keeps_one_decayed_fisher(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, "ewc.mode=online", "ewc.decay=0.5", "ewc.fisher_max_rows=4")
    ctx, plugin = trainer.parts.ctx, trainer.parts.plugins[0]
    ctx.task_index = 0
    plugin.on_task_end(ctx, trainer.parts.stream.tasks[0])
    (first, _), = plugin.consolidated
    first = {n: f.clone() for n, f in first.items()}
    ctx.task_index = 1
    plugin.on_task_end(ctx, trainer.parts.stream.tasks[1])
    ((both, _),) = plugin.consolidated
    separate = _trainer(tmp_path / "s", "ewc.fisher_max_rows=4")
    separate.parts.ctx.task_index = 1
    separate.parts.plugins[0].on_task_end(separate.parts.ctx, separate.parts.stream.tasks[1])
    ((second, _),) = separate.parts.plugins[0].consolidated
    for n in both:
        assert torch.allclose(both[n], 0.5 * first[n] + second[n], rtol=1e-5)


def test_state_round_trip_gives_the_same_penalty(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, "ewc.fisher_max_rows=4")
    ctx, plugin = trainer.parts.ctx, trainer.parts.plugins[0]
    ctx.task_index = 0
    plugin.on_task_end(ctx, trainer.parts.stream.tasks[0])
    with torch.no_grad():
        for p in ctx.inner_model.parameters():
            if p.requires_grad:
                p.add_(0.01)
    value = plugin.extra_loss(ctx, None, None)["ewc"]  # type: ignore[arg-type]
    assert float(value.detach()) > 0 and value.requires_grad
    fresh = EWCPlugin(trainer.parts.config, "ewc")
    fresh.load_state_dict(plugin.state_dict())
    again = fresh.extra_loss(ctx, None, None)["ewc"]  # type: ignore[arg-type]
    assert float(again.detach()) == float(value.detach())


def test_ewc_with_fixed_replay_in_one_run(tmp_path: Path) -> None:
    cfg = load_config(None, [*TINY, f"output_dir={tmp_path}", "name=ewc",
                             "methods=[fixed,ewc]", "replay.interval_units=0",
                             "data.num_tasks=3", "ewc.weight=100"])
    result = run(cfg)
    records = [json.loads(x) for x in (result.run_dir / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["type"] == "step"]
    assert all("ewc" not in r["losses"] for r in steps if r["task"] == 0)
    later = [r["losses"]["ewc"] for r in steps if r["task"] > 0]
    assert later and all(v >= 0 for v in later) and max(later) > 0
    assert sum(r["replayed"] for r in steps) > 0  # replay ran beside EWC
    assert [r["task"] for r in records if r["type"] == "ewc"] == [0, 1, 2]
    assert result.metrics["ap"] is not None
