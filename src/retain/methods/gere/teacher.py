"""The teacher of the comparison baselines (`kl`, `l1`, `l2`): the base model's outputs on the
replay rows (computed through the plugin context's forward, `Context.forward`).

The teacher is always the original base model. Under LoRA with nothing merged it is the same
network with the adapter disabled (`model.disable_adapter()`): one extra no-grad forward on the
replay rows, nothing stored. Under full fine-tuning the base weights are gone after the first
step, so its outputs are cached before training (`TeacherCache`): fp16 final hidden states for
`l1`/`l2`, the top-k log-probabilities (T = 2) and their ids for `kl`; the size is logged.
Decision: the log-probabilities are kept in fp32 (fp16 would put ~1e−3 of noise into a KL whose
value at the start is 0).
"""

from __future__ import annotations

import hashlib
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from torch import nn

from retain.models.hidden import unwrap_parallel


def adapter_disabled(model: nn.Module) -> AbstractContextManager[Any]:
    """The base model inside a PEFT model: its adapters switched off for the block."""
    inner = unwrap_parallel(model)
    disable = getattr(inner, "disable_adapter", None)
    if disable is None:
        raise ValueError(
            f"{type(inner).__name__} has no adapter to disable; a teacher without LoRA needs "
            "the teacher cache (model.finetune: full)"
        )
    return disable()


def digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class TeacherCache:
    """The base model's outputs on every replay token, row after row (`offsets` in tokens)."""

    def __init__(self, arrays: dict[str, np.ndarray], offsets: np.ndarray) -> None:
        self.arrays, self.offsets = arrays, np.asarray(offsets, np.int64)

    @classmethod
    def empty(cls, kind: str, tokens: int, dim: int, vocab: int, topk: int) -> TeacherCache:
        """`kind` l1/l2: fp16 hidden [tokens, dim]; kl: fp32 log-probs, int32 ids [tokens, k]."""
        if kind in ("l1", "l2"):
            arrays = {"hidden": np.empty((tokens, dim), dtype=np.float16)}
        else:
            k = min(topk, vocab)
            arrays = {
                "log_probs": np.empty((tokens, k), dtype=np.float32),
                "ids": np.empty((tokens, k), dtype=np.int32),
            }
        return cls(arrays, np.zeros(1, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays.values()))

    def write(self, start: int, values: dict[str, torch.Tensor]) -> None:
        for name, value in values.items():
            array = self.arrays[name]
            array[start : start + value.shape[0]] = value.detach().cpu().numpy().astype(array.dtype)

    def rows(self, rows: list[int], device: torch.device) -> dict[str, torch.Tensor]:
        """The cached outputs of replay rows `rows`, concatenated in that order."""
        spans = [(int(self.offsets[r]), int(self.offsets[r + 1])) for r in rows]
        return {
            name: torch.from_numpy(np.concatenate([a[s:e] for s, e in spans])).to(device)
            for name, a in self.arrays.items()
        }

    def save(self, path: Path) -> str:
        """Write to `path` (safetensors, atomically) and return its sha256."""
        tmp = path.with_name(path.name + ".tmp")
        save_file({**self.arrays, "offsets": self.offsets}, str(tmp))
        tmp.replace(path)
        return digest(path)

    @classmethod
    def load(cls, path: Path, sha256: str) -> TeacherCache:
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: the teacher cache of this run is missing, so the run cannot resume "
                "(the base model's outputs are gone after full fine-tuning); start afresh with "
                "--overwrite"
            )
        if digest(path) != sha256:
            raise ValueError(f"{path} does not match the sha256 its checkpoint recorded")
        arrays = load_file(str(path))
        offsets = arrays.pop("offsets")
        return cls(arrays, offsets)
