"""CL-aware checkpoints: everything needed to resume a run exactly, written atomically.

A checkpoint is a directory with `tensors.safetensors` (every tensor and array) and `state.json`
(the rest, with tensors replaced by references). No pickles are written or read.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

_TENSOR = "__tensor__"
_NDARRAY = "__ndarray__"
_ITEMS = "__items__"
_TUPLE = "__tuple__"


def _flatten(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace tensors by references into `tensors`; keep JSON for the rest."""
    if isinstance(value, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = value.detach().cpu().contiguous()
        return {_TENSOR: key}
    if isinstance(value, np.ndarray):
        key = f"t{len(tensors)}"
        tensors[key] = torch.from_numpy(np.ascontiguousarray(value))
        return {_NDARRAY: key}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: _flatten(v, tensors) for k, v in value.items()}
        return {_ITEMS: [[k, _flatten(v, tensors)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {_TUPLE: [_flatten(v, tensors) for v in value]}
    if isinstance(value, list):
        return [_flatten(v, tensors) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot checkpoint a value of type {type(value).__name__}")


def _unflatten(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if _TENSOR in value:
            return tensors[value[_TENSOR]]
        if _NDARRAY in value:
            return tensors[value[_NDARRAY]].numpy()
        if _ITEMS in value:
            return {k: _unflatten(v, tensors) for k, v in value[_ITEMS]}
        if _TUPLE in value:
            return tuple(_unflatten(v, tensors) for v in value[_TUPLE])
        return {k: _unflatten(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_unflatten(v, tensors) for v in value]
    return value


def save_checkpoint(directory: Path, state: dict[str, Any]) -> None:
    """Write `state` to `directory` atomically: a crash leaves the previous checkpoint intact."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    tensors: dict[str, torch.Tensor] = {}
    flat = _flatten(state, tensors)
    save_file(tensors, str(tmp / "tensors.safetensors"))
    with open(tmp / "state.json", "w") as f:
        json.dump(flat, f)
        f.flush()
        os.fsync(f.fileno())
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(directory, old)
    os.replace(tmp, directory)
    if old.exists():
        shutil.rmtree(old)


def load_checkpoint(directory: Path) -> dict[str, Any] | None:
    """The last complete checkpoint, or None. Falls back to `.old` if a swap was interrupted."""
    directory = Path(directory)
    for candidate in (directory, directory.with_name(directory.name + ".old")):
        if (candidate / "state.json").exists() and (candidate / "tensors.safetensors").exists():
            tensors = load_file(str(candidate / "tensors.safetensors"))
            with open(candidate / "state.json") as f:
                return _unflatten(json.load(f), tensors)
    return None


def rng_state() -> dict[str, Any]:
    import random

    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(legacy=False),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import random

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
