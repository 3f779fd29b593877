"""One optimizer step with gradient accumulation equals one step on the whole batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from retain.config import load_config
from retain.data.task import Example, Task, TaskStream
from retain.train.loop import ContinualTrainer

_ADAMW_STEP = torch.optim.AdamW.step

BASE = [
    "model.name_or_path=tiny-random", "eval.figures=false",
    "model.lora.dropout=0.0",
    "model.lora.target_modules=[q_proj,v_proj]",
    "train.steps_per_task=1",
    "train.warmup_ratio=0.0",
    "train.lr=0.05",
    "train.mixed_precision='no'",
    "train.progress=false",
    "data.max_length=64",
    "data.valid_per_task=0",
]


def _stream(equal_lengths: bool) -> TaskStream:
    answers = ["ab", "cd", "ef", "gh", "ij", "kl", "mn", "op"]
    if not equal_lengths:
        answers = ["a", "bcdefgh", "ij", "klmnopqrs", "t", "uv", "wxyzabcdef", "g"]
    train = [Example(f"Q{i}: say", a) for i, a in enumerate(answers)]
    return TaskStream("crafted", [Task("t", train, train[:2], scoring="generate",
                                       metric="exact_match", max_new_tokens=4)])


def _one_step(
    tmp_path: Path, name: str, batch: int, accum: int, equal: bool, monkeypatch, clip: float = 1e3
) -> tuple[dict, list]:
    """Trainable weights after one step, and the (clipped) gradients the optimizer saw.

    AdamW's first update is invariant to a constant gradient scale, so the gradients
    themselves are compared too: a loss divided twice by the accumulation count shows there.
    """
    seen: list[torch.Tensor] = []
    step = _ADAMW_STEP

    def recording_step(self, *args, **kwargs):
        seen.extend(p.grad.detach().clone() for g in self.param_groups for p in g["params"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    cfg = load_config(None, [*BASE, f"output_dir={tmp_path}", f"name={name}",
                             f"train.batch_size={batch}", f"train.grad_accum={accum}",
                             f"train.max_grad_norm={clip}"])
    trainer = ContinualTrainer(cfg, stream=_stream(equal))
    trainer.train_task(0, 0, None)
    model = trainer.parts.inner_model()
    weights = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    return weights, seen


# AdamW's first step is lr·g/(|g|+eps): for gradients near eps (active clipping makes them that
# small) it magnifies the float rounding of the gradient by up to lr/eps, so the weights are
# compared at 2e-3·lr (a wrong step moves them by ~lr) and the gradients, which carry the
# accumulation logic, tightly.
WEIGHT_TOL = 1e-4


def _assert_same(a: tuple[dict, list], b: tuple[dict, list], tol: float) -> None:
    (wa, ga), (wb, gb) = a, b
    assert wa.keys() == wb.keys() and wa
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=WEIGHT_TOL, rtol=0, msg=k)
    assert len(ga) == len(gb) == len(wa)
    for x, y in zip(ga, gb, strict=True):
        torch.testing.assert_close(x, y, atol=tol, rtol=1e-5)


@pytest.mark.parametrize("clip", [1e3, 1e-2])  # clipping on: inactive, and active
def test_accumulated_step_equals_one_big_batch_equal_answer_lengths(
    tmp_path: Path, monkeypatch, clip: float
) -> None:
    whole = _one_step(tmp_path, "whole", 8, 1, True, monkeypatch, clip)
    accum = _one_step(tmp_path, "accum", 4, 2, True, monkeypatch, clip)
    _assert_same(whole, accum, 1e-6)


def test_accumulated_step_weights_tokens_not_micro_batches(tmp_path: Path, monkeypatch) -> None:
    """Answers of different lengths: the step's loss is the mean over all its answer tokens,
    so how the rows are split into micro-batches does not change the update."""
    whole = _one_step(tmp_path, "whole", 8, 1, False, monkeypatch)
    accum = _one_step(tmp_path, "accum", 2, 4, False, monkeypatch)
    _assert_same(whole, accum, 1e-6)


def test_the_step_moves_the_weights(tmp_path: Path, monkeypatch) -> None:
    """Guards the two tests above against a step that changes nothing."""
    cfg = load_config(None, [*BASE, f"output_dir={tmp_path}", "name=ref"])
    trainer = ContinualTrainer(cfg, stream=_stream(True))
    model = trainer.parts.inner_model()
    before = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    after, grads = _one_step(tmp_path, "moved", 8, 1, True, monkeypatch)
    assert any(float(g.abs().max()) > 0 for g in grads)  # lora_B starts at 0
    assert any((before[k] - after[k]).abs().max() > 100 * WEIGHT_TOL for k in before)
