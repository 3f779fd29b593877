"""Run-directory files written atomically and the log reader (no torch import: reports and
tools read runs without loading the training stack)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def write_text_atomic(path: Path, text: str) -> None:
    """Write via a temp name beside the target, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """A temp path beside `path` to write to; it replaces `path` when the block succeeds and is
    removed when it fails. The name is unique per call: two processes writing the same file
    (two `retain bench` processes sharing one bench directory) must not rename each other's
    temp file away. The writer creates it, so the file gets the usual permissions."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        raise naming(exc, path) from exc
    finally:
        tmp.unlink(missing_ok=True)


def naming(exc: OSError, path: Path) -> OSError:
    """`exc` with the path being written (a full disk raised by `write` names no file)."""
    if exc.filename is not None:
        return exc
    return OSError(exc.errno, exc.strerror or str(exc), str(path))


def write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=str))


def read_log(path: Path) -> list[dict[str, Any]]:
    """Records of `log.jsonl`; a torn last line (crash mid-write) and blank lines are skipped."""
    if not Path(path).exists():
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
    return records
