"""O-LoRA's two loss terms (Wang et al. 2023; official code's definitions, docs/methods/olora.md).

Per LoRA layer, with `A_new` the current task's down-projection and `A_past` the rows of every
earlier task's (stacked), summed over layers:

    orthogonality = Σ |A_new A_pastᵀ|        (element-wise absolute values, summed)
    l2            = ‖A_new‖_F + ‖B_new‖_F    (unsquared)

Scale: the orthogonality term is a sum of |·| over r × r·(t−1) entries in every adapted layer,
not a mean. With PEFT's initialisation (A ~ U(±1/√d)) each entry is ≈ 0.8/(3√d) in size, so each
finished task adds ≈ 0.8·r²/(3√d) per layer: measured on SmolLM2-135M (r = 8, q/v of 30 layers,
d = 576) 41.5, 84.0, 126.9, 169.5 after 1–4 finished tasks (×λ1 = 0.5 in the loss), against a
per-token cross-entropy of order 1 that falls far below it on learned data. Users of the
official code (larger models, longer streams) report thousands of times the CE. Both terms are
logged under their own names, so the ratio is visible in every step record.
"""

from __future__ import annotations

import torch


def orthogonality(a_new: torch.Tensor, a_past: torch.Tensor) -> torch.Tensor:
    """`Σ |A_new A_pastᵀ|` of one layer (0 when no earlier task exists)."""
    if a_past.shape[0] == 0:
        return a_new.new_zeros(())
    return torch.abs(a_new @ a_past.to(a_new.dtype).T).sum()


def l2(a_new: torch.Tensor, b_new: torch.Tensor) -> torch.Tensor:
    """`‖A_new‖_F + ‖B_new‖_F` of one layer (unsquared norms, as the official code)."""
    return torch.linalg.norm(a_new) + torch.linalg.norm(b_new)
