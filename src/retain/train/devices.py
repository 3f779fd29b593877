"""Where the run computes and what the loss is: precision and device choice, peak memory, and
the per-row next-token loss every step and plugin shares."""

from __future__ import annotations

import gc
import resource
from pathlib import Path

import torch
import torch.nn.functional as F

from retain.config import RunConfig
from retain.data.encoding import IGNORE_INDEX


def mixed_precision(config: RunConfig) -> str:
    if config.train.mixed_precision != "auto":
        return config.train.mixed_precision
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def cpu_only() -> bool:
    """No accelerator device: tell accelerate so, or several CPU processes started by torchrun
    would each run alone instead of as one gloo process group."""
    mps = getattr(torch.backends, "mps", None)
    xpu = getattr(torch, "xpu", None)
    return not (
        torch.cuda.is_available()
        or (mps is not None and mps.is_available())
        or (xpu is not None and xpu.is_available())
    )


def peak_memory_mb(device: torch.device) -> float:
    """Peak since the last `reset_peak_memory`: accelerator memory, or the process's RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


CLEAR_REFS = Path("/proc/self/clear_refs")
"""Writing "5" here resets the process's peak RSS (Linux >= 4.0), which `ru_maxrss` reports."""


def reset_peak_memory(device: torch.device) -> bool:
    """Start a new peak for the run about to begin, and say whether that worked.

    `retain bench` runs its runs one after another in one process; without a reset every run
    would report the largest peak of the runs before it. Where the reset is not possible (not
    Linux, or /proc is read-only) the peak stays the process's."""
    gc.collect()  # let the previous run's tensors go before the new baseline is taken
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row summed next-token NLL and the number of answer tokens per row."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    nll = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view(shift_labels.shape)
    counts = (shift_labels != IGNORE_INDEX).sum(-1)
    return nll.sum(-1), counts


def answer_positions(labels: torch.Tensor) -> torch.Tensor:
    """[rows, length] bool: the positions whose next token is an answer token, the only
    positions whose logits the loss reads (`logits_to_keep`)."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return keep


def kept_token_losses(
    kept_logits: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor, model_name: str = "model"
) -> tuple[torch.Tensor, torch.Tensor]:
    """`token_losses` from the logits of the `keep` positions only ([kept, vocab], row-major),
    which spares the vocabulary projection of every prompt token."""
    targets = labels[:, 1:][keep[:, :-1]]
    if kept_logits.dim() != 2 or kept_logits.shape[0] != targets.shape[0]:
        raise RuntimeError(
            f"{model_name} returned logits of shape {tuple(kept_logits.shape)} for a bool "
            f"logits_to_keep of {targets.shape[0]} positions; its forward does not slice by a "
            "mask as transformers' decoders do"
        )
    nll = F.cross_entropy(kept_logits.float(), targets, reduction="none")
    rows = keep.nonzero()[:, 0]
    nll_sum = torch.zeros(labels.shape[0], dtype=nll.dtype, device=nll.device)
    return nll_sum.index_add(0, rows, nll), keep.sum(-1)
