"""The run directory: resolved config, environment, the append-only log."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch


class RunLog:
    """`log.jsonl`, one JSON record a line. Checkpoints store its size so that a resumed run
    first cuts what was logged after the checkpoint and the log never holds a step twice."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        """`enabled=False` (the other processes of a multi-process run) writes nothing."""
        self.path = Path(path)
        self.enabled = enabled
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path if enabled else os.devnull, "a")  # noqa: SIM115 - whole run

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def offset(self) -> int:
        self._file.flush()
        return self.path.stat().st_size if self.enabled else 0

    def truncate(self, offset: int) -> None:
        if not self.enabled:
            return
        self._file.flush()
        with open(self.path, "r+") as f:
            f.truncate(offset)
        self._file.seek(0, os.SEEK_END)

    def close(self) -> None:
        self._file.close()


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment(device: torch.device) -> dict[str, Any]:
    versions = {}
    for pkg in ("torch", "transformers", "peft", "accelerate", "datasets", "retain"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": versions,
        "git_sha": _git_sha(),
        "device": str(device),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
