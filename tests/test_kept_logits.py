"""The training forward projects only answer positions onto the vocabulary, with the very loss
and gradients of the full projection, unless a plugin reads the logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from retain.config import load_config
from retain.data.encoding import IGNORE_INDEX, Batch
from retain.models.hidden import projects_kept_positions
from retain.models.tiny import tiny_model_and_tokenizer
from retain.train.devices import answer_positions
from retain.train.loop import ContinualTrainer
from retain.train.step import forward


def _batch() -> Batch:
    """Right-padded rows whose answers start and end at different positions, one without any
    answer token."""
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 250, (4, 12), generator=gen)
    mask = torch.ones_like(ids)
    labels = torch.full_like(ids, IGNORE_INDEX)
    for row, (start, end) in enumerate([(5, 8), (2, 12), (9, 10), (0, 0)]):
        labels[row, start:end] = ids[row, start:end]
    mask[2, 10:] = 0
    ids[2, 10:] = 0
    return Batch(ids, mask, labels, torch.arange(4), torch.zeros(4, dtype=torch.long),
                 torch.zeros(4, dtype=torch.bool))


def _lora_model() -> nn.Module:
    model, _ = tiny_model_and_tokenizer(seed=1)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"]))
    for name, p in model.named_parameters():
        if "lora_B" in name:  # nonzero B, so the LoRA gradients are not all zero by chance
            torch.nn.init.normal_(p, std=0.02)
    return model.train()


def _loss_and_grads(model: nn.Module, full: bool) -> tuple[dict[str, torch.Tensor], dict]:
    model.zero_grad()
    outputs, nll_sum = forward(model, _batch(), full_logits=full)
    nll_sum.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    values = {"nll_sum": nll_sum.detach(), "per_sample": outputs.per_sample_loss.detach(),
              "tokens": outputs.answer_tokens, "task_loss": outputs.task_loss.detach()}
    return values, grads


def test_answer_positions_are_those_before_each_answer_token() -> None:
    keep = answer_positions(_batch().labels)
    assert keep[0].nonzero().flatten().tolist() == [4, 5, 6]
    assert keep[1].nonzero().flatten().tolist() == list(range(1, 11))
    assert keep[2].nonzero().flatten().tolist() == [8]
    assert not keep[3].any()


def test_kept_positions_give_the_full_projection_loss_and_gradients() -> None:
    model = _lora_model()
    full, full_grads = _loss_and_grads(model, full=True)
    kept, kept_grads = _loss_and_grads(model, full=False)
    assert full["tokens"].tolist() == kept["tokens"].tolist() == [3, 10, 1, 0]
    assert float(full["nll_sum"][3]) == float(kept["nll_sum"][3]) == 0.0
    for key in ("nll_sum", "per_sample", "task_loss"):
        torch.testing.assert_close(kept[key], full[key], rtol=1e-5, atol=1e-6, msg=key)
    assert full_grads.keys() == kept_grads.keys() and any("lora_A" in k for k in full_grads)
    for name, grad in full_grads.items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(kept_grads[name], grad, rtol=1e-4, atol=1e-7, msg=name)


def test_without_full_logits_the_outputs_carry_none() -> None:
    outputs, _ = forward(_lora_model(), _batch(), full_logits=False)
    assert outputs.logits is None
    outputs, _ = forward(_lora_model(), _batch(), full_logits=True)
    assert outputs.logits is not None and outputs.logits.shape[:2] == (4, 12)


class _NoKeep(nn.Module):
    """A causal LM whose forward has no `logits_to_keep`."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return input_ids


def test_models_are_asked_for_kept_positions_only_when_they_take_them() -> None:
    model, _ = tiny_model_and_tokenizer()
    assert projects_kept_positions(model)
    assert projects_kept_positions(get_peft_model(model, LoraConfig(target_modules=["q_proj"])))
    assert not projects_kept_positions(_NoKeep())


@pytest.mark.parametrize(("extra", "full"), [
    ([], False),
    (["methods=[mssr]"], False),
    (["methods=[gere]", "general.loss=tm"], False),
    (["methods=[gere]", "general.loss=kl"], True),
])
def test_the_loop_keeps_full_logits_only_for_plugins_that_read_them(
    tmp_path: Path, extra: list[str], full: bool
) -> None:
    source = tmp_path / "general.jsonl"
    source.write_text("".join(f'{{"text": "Line {i} of plain general text."}}\n' for i in range(8)))
    cfg = load_config(None, [
        "model.name_or_path=tiny-random", "eval.figures=false",
        "data.stream=builtin", "data.max_train_per_task=8",
        "data.max_test_per_task=2", "data.valid_per_task=0", "train.progress=false",
        f"general.source={source}", "general.size=4", f"output_dir={tmp_path}", *extra,
    ])
    assert ContinualTrainer(cfg).parts.full_logits is full


class _IntOnly(nn.Module):
    """Takes `logits_to_keep` but reads it as a count of last positions (older releases)."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                logits_to_keep: int | torch.Tensor = 0) -> object:
        logits = torch.zeros(*input_ids.shape, 7)
        return type("Out", (), {"logits": logits})()


def test_a_forward_that_ignores_the_mask_is_refused_by_name() -> None:
    with pytest.raises(RuntimeError, match="_IntOnly returned logits of shape"):
        forward(_IntOnly(), _batch(), full_logits=False)
