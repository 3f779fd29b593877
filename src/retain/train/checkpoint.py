"""CL-aware checkpoints: everything needed to resume a run exactly, written atomically.

A checkpoint is a directory with `tensors.safetensors` (every tensor and array), `state.json`
(the rest, with tensors replaced by references) and `manifest.json` (size and sha256 of both,
written last). No pickles are written or read. A run keeps its last two checkpoints (`latest`,
`previous`), so a damaged newest one costs one stage of recomputation, not the run.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

TENSORS, STATE, MANIFEST = "tensors.safetensors", "state.json", "manifest.json"
LATEST, PREVIOUS = "latest", "previous"


class CheckpointError(ValueError):
    """No usable checkpoint; the message names each one tried and the fix."""

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


def state_bytes(state: Any) -> bytes:
    """A canonical byte form of a state (JSON part plus every tensor's bytes), for digests."""
    tensors: dict[str, torch.Tensor] = {}
    flat = json.dumps(_flatten(state, tensors), sort_keys=True).encode()
    return flat + b"".join(
        tensors[k].detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()
        for k in sorted(tensors)  # reshape: a 0-d tensor cannot be viewed as bytes
    )


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors raises its own error type; a full disk must read as the OSError it is."""
    try:
        save_file(tensors, str(path))
    except SafetensorError as exc:
        found = re.search(r"os error (\d+)", str(exc))
        code = int(found.group(1)) if found else errno.EIO
        raise OSError(code, f"{os.strerror(code)} (writing a checkpoint)", str(path)) from exc


def save_checkpoint(directory: Path, state: dict[str, Any], previous: Path | None = None) -> None:
    """Write `state` to `directory` atomically: a crash leaves the previous checkpoint intact.

    With `previous`, the checkpoint that was at `directory` moves there instead of being deleted.
    """
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    tensors: dict[str, torch.Tensor] = {}
    flat = _flatten(state, tensors)
    try:
        _write_tensors(tensors, tmp / TENSORS)
        _fsync(tmp / TENSORS)
        try:
            with open(tmp / STATE, "w") as f:
                json.dump(flat, f)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:  # a full disk raised by `write` names no file
            if exc.filename is not None:
                raise
            raise OSError(exc.errno, exc.strerror or str(exc), str(tmp / STATE)) from exc
        files = {n: {"size": (tmp / n).stat().st_size, "sha256": _sha256(tmp / n)}
                 for n in (TENSORS, STATE)}
        with open(tmp / MANIFEST, "w") as f:
            json.dump({"files": files}, f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = previous if previous is not None else directory.with_name(directory.name + ".old")
    if directory.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(directory, old)
    os.replace(tmp, directory)
    if previous is None and old.exists():
        shutil.rmtree(old)


def save_rotating(root: Path, state: dict[str, Any]) -> None:
    """`root/latest` becomes `state`; the checkpoint it held before is kept as `root/previous`."""
    root = Path(root)
    save_checkpoint(root / LATEST, state, previous=root / PREVIOUS)


def checkpoint_problem(directory: Path) -> str | None:
    """Why `directory` is no complete, intact checkpoint (None: it is one)."""
    missing = [n for n in (TENSORS, STATE) if not (directory / n).is_file()]
    if missing:
        return f"{' and '.join(missing)} missing"
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        return None  # written before manifests existed: loading it is the check
    except (OSError, ValueError):
        return f"{MANIFEST} unreadable"
    for name, entry in manifest.get("files", {}).items():
        size = (directory / name).stat().st_size
        if size != entry.get("size"):
            return f"{name} is truncated or damaged ({size} bytes, {entry.get('size')} written)"
        if _sha256(directory / name) != entry.get("sha256"):
            return f"{name} does not match its sha256 checksum"
    return None


def read_checkpoint(directory: Path) -> dict[str, Any]:
    """The state saved in `directory`; CheckpointError saying what is wrong with it."""
    directory = Path(directory)
    problem = checkpoint_problem(directory)
    if problem is None:
        try:
            tensors = load_file(str(directory / TENSORS))
            with open(directory / STATE) as f:
                return _unflatten(json.load(f), tensors)
        except (OSError, ValueError, KeyError, SafetensorError) as exc:
            problem = f"cannot be read ({type(exc).__name__}: {exc})".replace("\n", " ")
    raise CheckpointError(f"{directory}: {problem}")


def _exists(directory: Path) -> bool:
    return directory.is_dir() and any(directory.iterdir())


def load_checkpoint(directory: Path) -> dict[str, Any] | None:
    """The last complete checkpoint, or None. Falls back to `.old` if a swap was interrupted."""
    directory = Path(directory)
    found = _first_good([directory, directory.with_name(directory.name + ".old")])
    return None if found is None else found.state


@dataclass
class FoundCheckpoint:
    """A readable checkpoint and the newer ones that were skipped, with the reason for each."""

    state: dict[str, Any]
    path: Path
    skipped: list[str] = field(default_factory=list)
    damaged: list[Path] = field(default_factory=list)

    def set_damaged_aside(self) -> None:
        """Rename the skipped checkpoints to `<name>.damaged`, so that the next save does not
        rotate a damaged one into `previous` in place of the good one."""
        for path in self.damaged:
            target = path.with_name(path.name + ".damaged")
            if target.exists():
                shutil.rmtree(target)
            os.replace(path, target)
        self.damaged = []


def _first_good(candidates: list[Path]) -> FoundCheckpoint | None:
    skipped: list[str] = []
    damaged: list[Path] = []
    for candidate in candidates:
        if not _exists(candidate):
            continue
        try:
            return FoundCheckpoint(read_checkpoint(candidate), candidate, skipped, damaged)
        except CheckpointError as exc:
            skipped.append(str(exc))
            damaged.append(candidate)
    if skipped:
        raise CheckpointError(
            f"no readable checkpoint: {'; '.join(skipped)}; start the run afresh with "
            "--overwrite (or --fresh), or choose another name=..."
        )
    return None


def load_newest(root: Path) -> FoundCheckpoint | None:
    """The newest intact checkpoint under `root` (latest, then previous); None if there is none."""
    root = Path(root)
    legacy = root / f"{LATEST}.old"  # an interrupted swap of the single-checkpoint layout
    return _first_good([root / LATEST, legacy, root / PREVIOUS])


def has_checkpoint(root: Path) -> bool:
    """Whether `root` holds any checkpoint, intact or not (a damaged one still marks a run)."""
    root = Path(root)
    return any(_exists(root / n) for n in (LATEST, f"{LATEST}.old", PREVIOUS))


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
