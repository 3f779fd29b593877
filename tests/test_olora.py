"""O-LoRA (docs/methods/olora.md): the two loss terms against a hand computation, old LoRAs
frozen and summed in every forward, a fresh LoRA per task, the merged export equal to the sum."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel

from retain.config import load_config
from retain.methods.base import Context
from retain.methods.olora.adapters import ADAPTER, PAST
from retain.methods.olora.plugin import OLoRAPlugin
from retain.models.adapters import prepare_for_finetuning
from retain.models.tiny import tiny_model_and_tokenizer


def _setup(*extra: str, tasks: int = 3) -> tuple[torch.nn.Module, OLoRAPlugin, Context]:
    cfg = load_config(None, ["model.name_or_path=tiny-random", "model.lora.dropout=0.0",
                             "methods=[olora]", "olora.rank=4", *extra])
    model = prepare_for_finetuning(tiny_model_and_tokenizer()[0], cfg.model)
    plugin = OLoRAPlugin(cfg)
    ctx = Context(config=cfg, stream=[None] * tasks, store=None, task_samples=[],  # type: ignore[arg-type]
                  device=torch.device("cpu"))
    return plugin.wrap_model(ctx, model), plugin, ctx


def _start(plugin: OLoRAPlugin, ctx: Context, t: int) -> None:
    ctx.task_index = t
    plugin.on_task_start(ctx, None)  # type: ignore[arg-type]


def _train(model: torch.nn.Module, plugin: OLoRAPlugin, ctx: Context, steps: int) -> None:
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for s in range(steps):
        ids = torch.randint(0, 256, (2, 6), generator=torch.Generator().manual_seed(s))
        loss = model(input_ids=ids, labels=ids).loss
        for value in plugin.extra_loss(ctx, None, None).values():  # type: ignore[arg-type]
            loss = loss + value
        loss.backward()
        opt.step()
        opt.zero_grad()


def _layers(plugin: OLoRAPlugin) -> list[torch.nn.Module]:
    return [layer for _, layer in plugin.layers]


def test_only_the_current_tasks_lora_trains_and_each_task_gets_a_fresh_one() -> None:
    model, plugin, ctx = _setup()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(f".{ADAPTER}." in n for n in trainable)
    assert all(layer.lora_A[ADAPTER].weight.shape[0] == 4 for layer in _layers(plugin))
    _start(plugin, ctx, 0)
    _train(model, plugin, ctx, 2)
    first = [layer.lora_A[ADAPTER].weight.detach().clone() for layer in _layers(plugin)]
    first_b = [layer.lora_B[ADAPTER].weight.detach().clone() for layer in _layers(plugin)]
    _start(plugin, ctx, 1)
    for layer, a, b in zip(_layers(plugin), first, first_b, strict=True):
        past = getattr(layer, PAST)
        assert torch.equal(past.A[:4], a) and torch.equal(past.B[:, :4], b)
        assert past.rows == 4 and not past.A.requires_grad and not past.B.requires_grad
        assert torch.equal(layer.lora_B[ADAPTER].weight, torch.zeros_like(b))  # fresh: B = 0
        assert not torch.equal(layer.lora_A[ADAPTER].weight, a)
    _train(model, plugin, ctx, 2)
    for layer, a in zip(_layers(plugin), first, strict=True):
        assert torch.equal(getattr(layer, PAST).A[:4], a)  # old LoRAs stay frozen
    with model.disable_adapter():  # PEFT re-enables its own adapters on exit, not ours
        pass
    assert not any(p.requires_grad for n, p in model.named_parameters() if PAST in n)


def test_penalty_terms_match_a_hand_computation() -> None:
    model, plugin, ctx = _setup("olora.lambda_orth=0.5", "olora.lambda_l2=0.25",
                                "train.grad_accum=3")
    _start(plugin, ctx, 0)
    _train(model, plugin, ctx, 1)
    _start(plugin, ctx, 1)
    _train(model, plugin, ctx, 1)
    _start(plugin, ctx, 2)
    _train(model, plugin, ctx, 1)
    orth, norm = 0.0, 0.0
    for layer in _layers(plugin):
        a = layer.lora_A[ADAPTER].weight.detach().tolist()
        b = layer.lora_B[ADAPTER].weight.detach().tolist()
        old = getattr(layer, PAST).A.detach()[:8].tolist()  # two finished tasks of rank 4
        for row in a:
            for past_row in old:
                orth += abs(sum(u * v for u, v in zip(row, past_row, strict=True)))
        norm += math.sqrt(sum(v * v for row in a for v in row))
        norm += math.sqrt(sum(v * v for row in b for v in row))
    losses = plugin.extra_loss(ctx, None, None)  # type: ignore[arg-type]
    assert set(losses) == {"olora_orth", "olora_l2"}
    # weighted; a step carries them grad_accum times: the official code adds them to every
    # micro-batch's loss, and the loop adds them unscaled to each of the 3 micro-batches
    from retain.train.step import LossScales

    assert orth > 0 and norm > 0
    assert float(losses["olora_orth"].detach()) == pytest.approx(0.5 * orth, rel=1e-5)
    assert float(losses["olora_l2"].detach()) == pytest.approx(0.25 * norm, rel=1e-5)
    scales = LossScales(task=1.0, micro_batches=3)
    step = sum(float(scales.weigh(plugin, None, losses["olora_orth"]).detach())  # type: ignore[arg-type]
               for _ in range(3))
    assert step == pytest.approx(0.5 * 3 * orth, rel=1e-5)
    assert losses["olora_orth"].requires_grad and losses["olora_l2"].requires_grad
    _, first, first_ctx = _setup()
    _start(first, first_ctx, 0)  # task 1: no old LoRA, nothing to be orthogonal to
    assert float(first.extra_loss(first_ctx, None, None)["olora_orth"].detach()) == 0.0  # type: ignore[arg-type]


def test_every_forward_sums_all_tasks_loras_and_the_export_is_their_merge(
    tmp_path: Path,
) -> None:
    model, plugin, ctx = _setup()
    for t in range(3):
        _start(plugin, ctx, t)
        _train(model, plugin, ctx, 2)
    model.eval()
    _, layer = plugin.layers[0]
    x = torch.randn(2, 5, layer.lora_A[ADAPTER].weight.shape[1])
    past = getattr(layer, PAST)
    s = layer.scaling[ADAPTER]
    expected = layer.base_layer(x)
    for j in range(2):
        a, b = past.A[4 * j : 4 * j + 4], past.B[:, 4 * j : 4 * j + 4]
        expected = expected + F.linear(F.linear(x, a), b) * s
    expected = expected + F.linear(F.linear(x, layer.lora_A[ADAPTER].weight),
                                   layer.lora_B[ADAPTER].weight) * s
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-6)
    with model.disable_adapter():
        assert torch.equal(layer(x), layer.base_layer(x))  # e.g. GeRe's teacher: base only

    ids = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = model(input_ids=ids).logits
    plugin.export_adapter(ctx, model, tmp_path / "merged")
    reloaded = PeftModel.from_pretrained(tiny_model_and_tokenizer()[0], str(tmp_path / "merged"))
    merged_config = reloaded.peft_config["default"]
    assert (merged_config.r, merged_config.lora_alpha) == (12, 48)  # 3 tasks of rank 4, α 16
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, ours, rtol=0, atol=1e-5)
        merged = reloaded.merge_and_unload()
        torch.testing.assert_close(merged(input_ids=ids).logits, ours, rtol=0, atol=1e-5)


def test_state_round_trip_restores_the_frozen_loras() -> None:
    model, plugin, ctx = _setup()
    _start(plugin, ctx, 0)
    _train(model, plugin, ctx, 1)
    _start(plugin, ctx, 1)
    state = plugin.state_dict()
    _, other, other_ctx = _setup()
    other.load_state_dict(state)
    _start(other, other_ctx, 1)  # mid-task resume: nothing archived or redrawn again
    assert other.archived == 1
    for (_, a), (_, b) in zip(plugin.layers, other.layers, strict=True):
        assert torch.equal(getattr(a, PAST).A, getattr(b, PAST).A)
        assert getattr(b, PAST).rows == 4
