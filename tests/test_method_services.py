"""The model services of the plugin context: a forward on given rows, a frozen teacher copy,
and the reduction across processes (methods/services.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from retain.config import load_config
from retain.methods.services import all_reduce
from retain.train.devices import token_losses
from retain.train.loop import ContinualTrainer
from tests.test_engine import TINY


def _trainer(tmp_path: Path, *extra: str) -> ContinualTrainer:
    return ContinualTrainer(load_config(None, [*TINY, f"output_dir={tmp_path}", *extra]))


def test_forward_gives_each_rows_mean_answer_loss(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path)
    ctx = trainer.parts.ctx
    batch = ctx.rows(ctx.task_samples[0][:3])
    assert batch.size == 3 and batch.input_ids.device == ctx.device
    with torch.no_grad():
        out = ctx.forward(batch, logits=True)
        logits = trainer.parts.model(input_ids=batch.input_ids,
                               attention_mask=batch.attention_mask).logits
    nll, counts = token_losses(logits, batch.labels)
    assert out.logits is not None and out.logits.shape[:2] == batch.input_ids.shape
    assert torch.allclose(out.per_sample_loss, nll / counts, atol=1e-5)
    assert torch.equal(out.answer_tokens, counts)
    assert float(out.task_loss) == pytest.approx(float(nll.sum() / counts.sum()), rel=1e-5)
    out = ctx.forward(batch)  # with grad: a method may differentiate it
    assert out.task_loss.requires_grad


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_a_frozen_copy_keeps_the_model_as_it_was(tmp_path: Path, finetune: str) -> None:
    trainer = _trainer(tmp_path, f"model.finetune={finetune}")
    ctx = trainer.parts.ctx
    teacher = ctx.frozen_copy()
    trainable = [p for p in ctx.inner_model.parameters() if p.requires_grad]
    assert all(not p.requires_grad for p in teacher.model.parameters())
    assert not teacher.model.training
    shared = [p for p in teacher.model.parameters() if id(p) in ctx.fixed_params]
    if finetune == "lora":  # the backbone is shared, the adapter copied
        assert shared and len(teacher.owned) == len(trainable)
    else:
        assert not shared and len(teacher.owned) == len(list(ctx.inner_model.parameters()))
    batch = ctx.rows(ctx.task_samples[0][:2])
    with torch.no_grad():
        before = ctx.forward(batch, teacher.model).per_sample_loss
        for p in trainable:
            p.add_(0.05 * torch.randn_like(p))
        after_student = ctx.forward(batch).per_sample_loss
        after_teacher = ctx.forward(batch, teacher.model).per_sample_loss
    assert torch.equal(before, after_teacher) and not torch.equal(before, after_student)
    state = teacher.state_dict()
    rebuilt = ctx.frozen_copy()  # from the changed model, then restored: the old teacher again
    rebuilt.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(ctx.forward(batch, rebuilt.model).per_sample_loss, before)
    with pytest.raises(ValueError, match="lacks"):
        rebuilt.load_state_dict({})


def test_reduce_in_one_process_is_the_identity() -> None:
    tensors = [torch.ones(2), torch.arange(3.0)]
    assert all_reduce(tensors, "sum") is tensors


def test_in_one_process_the_share_is_everything() -> None:
    from retain.methods.services import process_share

    assert process_share([3, 1, 2]) == [3, 1, 2]
