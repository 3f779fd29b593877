"""The one pass of the untouched model over the replay set, before the first task.

It yields everything GeRe needs from the base model: the per-dimension moments (thresholds) and
the compact state cache for `tm`, and under full fine-tuning the teacher cache for `kl`/`l1`/
`l2`. The rows are batched like training micro-batches (`general.target_batch_size`, default
`train.batch_size`), right-padded, and run through the plugin context's forward (the training
step's model call, autocast and hidden-state hook) with dropout off, so a training forward of
the unchanged model reproduces the targets (on CPU bit for bit; the first step's L_TM is logged
to show it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from retain.data.encoding import Batch
from retain.methods.gere.losses import topk_teacher
from retain.methods.gere.targets import ActivationBuffer, Moments, StateCache, thresholds
from retain.methods.gere.teacher import TeacherCache


@dataclass
class BaseOutputs:
    """What the pass produced: thresholds and states (tm), or a teacher cache (full FT)."""

    moments: dict[str, torch.Tensor]
    cache: StateCache | None = None
    teacher: TeacherCache | None = None
    forward_passes: int = 0


class _Teacher:
    """Fills a teacher cache batch by batch (allocated once the sizes are known)."""

    def __init__(self, loss: str, tokens: int, topk: int) -> None:
        self.loss, self.tokens, self.topk = loss, tokens, topk
        self.cache: TeacherCache | None = None

    def add(self, start: int, hidden: torch.Tensor | None, logits: torch.Tensor) -> None:
        if self.loss == "kl":
            values, ids = topk_teacher(logits, self.topk)
            if self.cache is None:
                self.cache = TeacherCache.empty("kl", self.tokens, 0, logits.shape[-1], self.topk)
            self.cache.write(start, {"log_probs": values, "ids": ids.int()})
            return
        assert hidden is not None
        if self.cache is None:
            self.cache = TeacherCache.empty(self.loss, self.tokens, hidden.shape[1], 0, 0)
        self.cache.write(start, {"hidden": hidden})


BaseForward = Callable[[list[int]], tuple[Batch, torch.Tensor | None, torch.Tensor]]
"""Store rows → (their batch, final hidden states or None, logits) of the untouched model,
no grad, dropout off: the plugin context's forward (`Context.forward`)."""


def run_base_pass(
    forward: BaseForward,
    first: int,
    offsets: np.ndarray,
    batch_size: int,
    states: bool,
    teacher_loss: str | None = None,
    topk: int = 64,
) -> BaseOutputs:
    """Run the model over store rows `first ..` (the replay set, token `offsets` per row);
    `states`: compute thresholds and the state cache; `teacher_loss`: fill that teacher cache."""
    rows, tokens = len(offsets) - 1, int(offsets[-1])
    moments: Moments | None = None
    buffer: ActivationBuffer | None = None
    teacher = _Teacher(teacher_loss, tokens, topk) if teacher_loss else None
    filled = passes = 0
    for start in range(0, rows, batch_size):
        ids = list(range(first + start, first + min(start + batch_size, rows)))
        batch, hidden, logits = forward(ids)
        passes += 1
        mask = batch.attention_mask.bool()
        h = hidden[mask] if hidden is not None else None
        if states:
            assert h is not None, "states need the final hidden states"
            if moments is None or buffer is None:
                moments, buffer = Moments(h.shape[1]), ActivationBuffer(tokens, h.shape[1])
            moments.update(h.float())
            buffer.add(h.float())
        if teacher is not None:
            teacher.add(filled, h, logits[mask])
        filled += int(mask.sum())
    out = BaseOutputs({}, teacher=teacher.cache if teacher is not None else None,
                      forward_passes=passes)
    if states:
        assert moments is not None and buffer is not None
        mean, std = moments.mean, moments.std
        tau_pos, tau_neg = thresholds(mean, std)
        out.moments = {"mean": mean, "std": std, "tau_pos": tau_pos, "tau_neg": tau_neg}
        out.cache = StateCache.build(buffer.values, offsets, tau_pos, tau_neg)
        buffer.close()
    if out.teacher is not None:
        out.teacher.offsets = offsets
    return out
