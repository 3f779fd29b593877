"""Checkpoints: the last two are kept, a damaged one is detected and the previous one used."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
import torch

from retain.train import checkpoint
from retain.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_newest,
    save_checkpoint,
    save_rotating,
)


def _state(k: int) -> dict:
    return {"k": k, "w": torch.full((64,), float(k)), "nested": {"t": (1, 2)}}


def test_the_last_two_checkpoints_are_kept(tmp_path: Path) -> None:
    for k in range(3):
        save_rotating(tmp_path, _state(k))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "previous"]
    found = load_newest(tmp_path)
    assert found is not None and found.state["k"] == 2 and found.skipped == []
    assert load_checkpoint(tmp_path / "previous")["k"] == 1


@pytest.mark.parametrize("damage", ["truncate", "flip_tensor_byte", "flip_state_byte", "delete"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous(tmp_path: Path,
                                                                damage: str) -> None:
    save_rotating(tmp_path, _state(1))
    save_rotating(tmp_path, _state(2))
    latest = tmp_path / "latest"
    tensors, state = latest / "tensors.safetensors", latest / "state.json"
    if damage == "truncate":
        tensors.write_bytes(tensors.read_bytes()[:-100])
    elif damage == "flip_tensor_byte":
        data = bytearray(tensors.read_bytes())
        data[-3] ^= 0xFF  # the file still loads: only the checksum can tell
        tensors.write_bytes(bytes(data))
    elif damage == "flip_state_byte":
        state.write_text(state.read_text().replace('"k": 2', '"k": 7'))
    else:
        state.unlink()
    found = load_newest(tmp_path)
    assert found is not None and found.state["k"] == 1
    assert found.path == tmp_path / "previous"
    assert len(found.skipped) == 1 and str(latest) in found.skipped[0]
    torch.testing.assert_close(found.state["w"], torch.full((64,), 1.0))


def test_no_readable_checkpoint_is_one_error_naming_each_and_the_fix(tmp_path: Path) -> None:
    save_rotating(tmp_path, _state(1))
    save_rotating(tmp_path, _state(2))
    for name in ("latest", "previous"):
        path = tmp_path / name / "tensors.safetensors"
        path.write_bytes(path.read_bytes()[:10])
    with pytest.raises(CheckpointError) as err:
        load_newest(tmp_path)
    message = str(err.value)
    assert str(tmp_path / "latest") in message and str(tmp_path / "previous") in message
    assert "--overwrite" in message and "\n" not in message


def test_an_interrupted_rotation_leaves_a_loadable_checkpoint(tmp_path: Path) -> None:
    save_rotating(tmp_path, _state(1))
    save_rotating(tmp_path, _state(2))
    shutil.rmtree(tmp_path / "latest")  # crash between the two renames
    found = load_newest(tmp_path)
    assert found is not None and found.state["k"] == 1
    assert load_newest(tmp_path / "nothing") is None


def test_a_checkpoint_without_a_manifest_still_loads(tmp_path: Path) -> None:
    """Checkpoints written before checksums existed are checked by loading them."""
    save_checkpoint(tmp_path / "latest", _state(3))
    (tmp_path / "latest" / checkpoint.MANIFEST).unlink()
    found = load_newest(tmp_path)
    assert found is not None and found.state["k"] == 3


def test_a_full_disk_is_an_os_error_naming_the_file(tmp_path: Path, monkeypatch) -> None:
    from safetensors import SafetensorError

    def full(tensors, filename, metadata=None):
        raise SafetensorError("Error while serializing: I/O error: No space left (os error 28)")

    monkeypatch.setattr(checkpoint, "save_file", full)
    with pytest.raises(OSError) as err:
        save_rotating(tmp_path, _state(1))
    assert err.value.errno == errno.ENOSPC and "tensors.safetensors" in str(err.value.filename)
    assert not (tmp_path / "latest").exists()


def test_the_manifest_records_size_and_sha256(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "c", _state(1))
    manifest = json.loads((tmp_path / "c" / checkpoint.MANIFEST).read_text())
    for name in ("tensors.safetensors", "state.json"):
        entry = manifest["files"][name]
        assert entry["size"] == (tmp_path / "c" / name).stat().st_size
        assert len(entry["sha256"]) == 64


def test_state_bytes_digests_scalar_tensors_too() -> None:
    """A plugin may hold a 0-d tensor (a learned scalar); the multi-process digest must take it."""
    import torch

    from retain.train.checkpoint import state_bytes

    a = state_bytes({"g": torch.tensor(1.5), "w": torch.ones(2)})
    assert a == state_bytes({"g": torch.tensor(1.5), "w": torch.ones(2)})
    assert a != state_bytes({"g": torch.tensor(2.5), "w": torch.ones(2)})
