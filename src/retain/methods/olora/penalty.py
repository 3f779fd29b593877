"""O-LoRA's two loss terms (Wang et al. 2023; official code's definitions, procl.md).

Per LoRA layer, with `A_new` the current task's down-projection and `A_past` the rows of every
earlier task's (stacked), summed over layers:

    orthogonality = Σ |A_new A_pastᵀ|        (element-wise absolute values, summed)
    l2            = ‖A_new‖_F + ‖B_new‖_F    (unsquared)

Scale: the orthogonality term is a sum over r × r·(t−1) entries of every adapted layer, so
with λ1 = 0.5 it is routinely tens to thousands of times the per-token cross-entropy (users
of the official code report the latter); it is logged under its own name so the ratio shows.
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
