"""The distillation term of LwF (docs/methods/lwf.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL(p_T ‖ q_T) summed over positions: `student`, `teacher` are [positions, vocab]
    logits, p_T = softmax(teacher / T), q_T = softmax(student / T); zero for no positions.
    Decision: no T² factor (Avalanche's and the LwF paper's form), so `lwf.weight` is the
    term's whole weight."""
    if student.shape[0] == 0:
        return student.sum() * 0.0
    log_q = F.log_softmax(student.float() / temperature, dim=-1)
    log_p = F.log_softmax(teacher.float() / temperature, dim=-1)
    return F.kl_div(log_q, log_p, log_target=True, reduction="sum")
