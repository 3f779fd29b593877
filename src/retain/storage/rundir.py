"""The run directory: its lock, what may be overwritten, resolved config, environment, the log."""

from __future__ import annotations

import gc
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import torch

from retain.storage import run_files

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: runs are not locked
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = run_files.LOCK
WORK_DIR = run_files.WORK
"""Where plugins keep files they rebuild on a fresh start (GeRe's memory-mapped state cache and
teacher cache); what else a run writes: storage/run_files.py."""


class RunDirError(ValueError):
    """The run directory cannot be used as asked; the message names the path and the fix."""


class RunLock:
    """An exclusive `flock` on `<run_dir>/.lock` for the life of a run.

    The file holds the holder's pid and host, so a second process can say who is running.
    The file is never deleted (deleting it would let two processes lock different inodes);
    the kernel drops the lock when its holder exits, however it exits.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._file: IO[str] | None = None

    def acquire(self) -> RunLock:
        if fcntl is None:
            return self
        for attempt in range(2):
            handle = open(self.path, "a+")  # noqa: SIM115 - held for the whole run
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip()
                handle.close()
                if attempt == 0:
                    gc.collect()  # a lock of this process whose owner is garbage is freed now
                    continue
                raise RunDirError(
                    f"{self.path.parent} is in use by {_describe(holder)}; wait for that run "
                    "to end, or choose another name=..."
                ) from None
            handle.truncate(0)
            record = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "argv": sys.argv,
            }
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            self._file = handle
            break
        return self

    def release(self) -> None:
        if self._file is not None and not self._file.closed:
            self._file.truncate(0)
            self._file.close()  # closing drops the flock
        self._file = None


@contextmanager
def waiting_lock(path: Path) -> Iterator[None]:
    """An exclusive `flock` on `path` for the block, waiting for another holder to finish (for
    short read-modify-writes of a shared file; a run holds `RunLock` instead)."""
    with open(path, "a+") as handle:
        if fcntl is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # dropped when the file closes
        yield


def _describe(holder: str) -> str:
    try:
        info = json.loads(holder)
        return f"pid {info['pid']} on {info['host']} (since {info.get('started', '?')})"
    except (ValueError, KeyError, TypeError):
        return "another process (it wrote no pid yet)"


def check_run_dir_path(run_dir: Path) -> None:
    """A file where the run directory (or a folder above it) should be is named with the fix."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is a file, not a run directory; move it away or choose "
                          "another output_dir=... or name=...")
    blocker = next((p for p in run_dir.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise RunDirError(f"cannot create run directory {run_dir}: {blocker} is a file; "
                          "choose another output_dir=...")


def ensure_run_dir(run_dir: Path) -> None:
    """Create the run directory, or say in one line why it cannot be."""
    check_run_dir_path(run_dir)
    try:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create run directory {run_dir}: {exc.strerror}; "
                          "choose an output_dir=... you can write") from None


def is_retain_config(path: Path) -> bool:
    """A config.yaml retain wrote (a resolved run config), not someone's file of that name."""
    from retain.yaml_io import load_yaml_file

    try:
        data = load_yaml_file(path, "run config")
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"name", "methods", "model", "train"} <= set(data)


def _not_a_run(run_dir: Path) -> str | None:
    """Why `run_dir` (not empty) is no directory a run wrote, or None: its config.yaml must be
    a run config and every entry one a run writes."""
    config = Path(run_dir) / run_files.CONFIG
    foreign = run_files.foreign_entries(run_dir)
    if foreign:
        return f"files no run writes ({run_files.shown(foreign)})"
    if not config.is_file():
        return "no config.yaml"
    if not is_retain_config(config):
        return "a config.yaml that is no retain run config"
    return None


def _entries(run_dir: Path) -> list[Path]:
    return [p for p in Path(run_dir).iterdir() if p.name != LOCK_FILE]


def refuse_foreign_files(run_dir: Path) -> None:
    """A folder with files but no checkpoint of this run is never overwritten without asking,
    unless it holds only what a run writes before its first checkpoint (a run killed then is
    simply started again: it rewrites all of that)."""
    if not _entries(run_dir):
        return
    why = _not_a_run(run_dir)
    if why is None and run_files.only_early(run_dir):
        return
    if why is not None:  # --overwrite would refuse it too: say what to do instead
        raise RunDirError(f"{run_dir} holds {why}, so it is neither used nor overwritten; move "
                          "your files away, or choose another name=...")
    raise RunDirError(
        f"{run_dir} holds a run's results but no checkpoint of it, so it is not overwritten; "
        "pass --overwrite (or --fresh) to clear it, or choose another name=..."
    )


def refuse_clearing_foreign(run_dir: Path) -> list[Path]:
    """The entries `clear_run_dir` would delete; refused, naming why, unless the folder is a
    run's and holds only what runs write (storage/run_files.py)."""
    entries = _entries(run_dir)
    if not entries:
        return entries
    why = _not_a_run(run_dir)
    if why is not None:
        raise RunDirError(
            f"{run_dir} holds {why}, so --overwrite deletes nothing in it (it clears only a "
            "directory a run wrote); move your files away, or choose another name=..."
        )
    return entries


def clear_run_dir(run_dir: Path) -> int:
    """Delete everything in a run directory but its lock; the number of entries removed.

    Refused, before anything is deleted, for a folder holding anything a run does not write.
    """
    entries = refuse_clearing_foreign(run_dir)
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return len(entries)


class RunLog:
    """`log.jsonl`, one JSON record a line. Checkpoints store its size so that a resumed run
    first cuts what was logged after the checkpoint and the log never holds a step twice."""

    def __init__(
        self,
        path: Path,
        enabled: bool = True,
        sink: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        """`enabled=False` (the other processes of a multi-process run) writes nothing;
        `sink` also receives every record (experiment trackers)."""
        self.path = Path(path)
        self.enabled = enabled
        self.sink = sink
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path if enabled else os.devnull, "a")  # noqa: SIM115 - whole run

    def write(self, record: dict[str, Any]) -> None:
        from retain.storage.files import naming

        try:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        except OSError as exc:  # a full disk: say which file
            raise naming(exc, self.path) from exc
        if self.sink is not None and self.enabled:
            self.sink(record)

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
