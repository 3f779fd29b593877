"""Read raw records from files or Hugging Face dataset ids, with errors that say where.

Every reader returns plain dicts; turning them into `Example`s is the job of `records.py`.
A problem in the data stops loading with a `DataFormatError` that names the file, the record
index (and the line, for line-based formats) and what was expected, so a user can fix the file
instead of debugging a stack trace.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, TextIO

from retain.hub import hub_unreachable

HF_PREFIX = "hf:"
SUFFIXES = (
    ".json",
    ".json.gz",
    ".jsonl",
    ".jsonl.gz",
    ".csv",
    ".csv.gz",
    ".parquet",
    ".txt",
    ".raw",
)


class DataFormatError(ValueError):
    """Data that cannot be loaded; the message names the file, the record and the field."""


class DataFileNotFoundError(DataFormatError, FileNotFoundError):
    """A data file that does not exist (also a FileNotFoundError, for callers that expect one)."""


class Records(list[dict[str, Any]]):
    """Records plus, where the format has lines, the 1-based line each record came from.

    The line numbers only serve error messages: a converter that finds a bad field can point
    at `file line 7 (record 6)`, which an editor can jump to.
    """

    def __init__(self, items: Iterable[dict[str, Any]] = (), lines: list[int] | None = None):
        super().__init__(items)
        self.lines = lines


def locate(source: str, records: Sequence[Any], index: int) -> str:
    """`file line 7 (record 6)` when the line is known, else `file record 6`."""
    return _where(source, getattr(records, "lines", None), index)


def _where(source: str, lines: list[int] | None, index: int) -> str:
    if lines is not None and index < len(lines):
        return f"{source} line {lines[index]} (record {index})"
    return f"{source} record {index}"


def read_records(source: str | Path, fieldnames: Sequence[str] | None = None) -> Records:
    """All records of a data file or of `hf:<id>[:<config>]:<split>`.

    `fieldnames` is for CSV files that may lack a header (the original MMLU files): the columns
    get these names, and a first row equal to them is taken as the header and skipped.
    """
    text = str(source)
    if text.startswith(HF_PREFIX):
        return _read_hf(text)
    path = Path(source)
    name = path.name.lower()
    if not name.endswith(SUFFIXES):
        raise DataFormatError(
            f"{path}: unknown data file type; expected one of {', '.join(SUFFIXES)} "
            f"or a dataset id {HF_PREFIX}<id>[:<config>]:<split>"
        )
    if not path.is_file():
        raise DataFileNotFoundError(f"data file not found: {path}")
    try:
        if name.endswith(".parquet"):
            return _read_parquet(path)
        with _open_text(path) as f:
            if name.endswith((".jsonl", ".jsonl.gz")):
                return _read_jsonl(f, str(path))
            if name.endswith((".json", ".json.gz")):
                return _read_json(f, str(path))
            if name.endswith((".csv", ".csv.gz")):
                return _read_csv(f, str(path), fieldnames)
            return _read_lines(f)
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as exc:
        raise DataFormatError(f"{path}: cannot decode the file: {exc}") from exc


def _open_text(path: Path) -> TextIO:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    # utf-8-sig: a byte-order mark (Excel's CSV export) is no part of the first column's name
    return open(path, encoding="utf-8-sig", newline="")  # noqa: SIM115 - the caller closes it


def _check_objects(records: list[Any], source: str, lines: list[int] | None = None) -> Records:
    out = Records(lines=lines)
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            where = _where(source, lines, i)
            raise DataFormatError(f"{where}: expected an object {{...}}, got {type(rec).__name__}")
        out.append(rec)
    return out


def _read_json(f: TextIO, source: str) -> Records:
    try:
        data = json.load(f)
    except json.JSONDecodeError as exc:
        raise DataFormatError(
            f"{source} line {exc.lineno} column {exc.colno}: invalid JSON: {exc.msg}"
        ) from exc
    if not isinstance(data, list):
        raise DataFormatError(
            f"{source}: expected a JSON list of records [{{...}}, ...], got {type(data).__name__}"
        )
    return _check_objects(data, source)


def _read_jsonl(f: TextIO, source: str) -> Records:
    items: list[Any] = []
    lines: list[int] = []
    for lineno, line in enumerate(f, start=1):
        if not line.strip():
            continue
        try:
            items.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataFormatError(
                f"{source} line {lineno} (record {len(items)}): invalid JSON: {exc.msg}"
            ) from exc
        lines.append(lineno)
    return _check_objects(items, source, lines)


def _read_csv(f: TextIO, source: str, fieldnames: Sequence[str] | None) -> Records:
    reader = csv.reader(f)
    try:
        rows = [(reader.line_num, row) for row in reader]
    except csv.Error as exc:
        raise DataFormatError(f"{source} line {reader.line_num}: invalid CSV: {exc}") from exc
    rows = [(n, row) for n, row in rows if row]
    if fieldnames is not None:
        header = list(fieldnames)
        if rows and [c.strip() for c in rows[0][1]] == header:
            rows = rows[1:]
    elif rows:
        header = [c.strip() for c in rows[0][1]]
        rows = rows[1:]
    else:
        return Records(lines=[])
    out = Records(lines=[n for n, _ in rows])
    for i, (lineno, row) in enumerate(rows):
        if len(row) != len(header):
            raise DataFormatError(
                f"{source} line {lineno} (record {i}): {len(row)} columns, expected "
                f"{len(header)} ({', '.join(header)})"
            )
        out.append(dict(zip(header, row, strict=True)))
    return out


def _read_lines(f: TextIO) -> Records:
    out = Records(lines=[])
    for lineno, line in enumerate(f, start=1):
        text = line.rstrip("\r\n")
        if text.strip():
            out.append({"text": text})
            out.lines.append(lineno)  # type: ignore[union-attr]
    return out


def _read_parquet(path: Path) -> Records:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise DataFormatError(f"{path}: cannot read Parquet: {exc}") from exc
    return Records(table.to_pylist())


def parse_hf_id(source: str) -> tuple[str, str | None, str]:
    """`hf:<id>[:<config>]:<split>` -> (id, config or None, split)."""
    parts = source[len(HF_PREFIX) :].split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise DataFormatError(
            f"{source!r}: expected {HF_PREFIX}<id>[:<config>]:<split>, "
            "e.g. hf:openai/gsm8k:main:test"
        )
    if len(parts) == 2:
        return parts[0], None, parts[1]
    return parts[0], parts[1], parts[2]


def _read_hf(source: str) -> Records:
    """A split of a Hub dataset. Dataset scripts are never run (no remote code)."""
    dataset_id, config, split = parse_hf_id(source)
    import datasets

    unreachable = hub_unreachable()  # offline: the cache or a failure at once, not 50 s of retries
    try:
        with _offline(datasets) if unreachable else nullcontext():
            ds = datasets.load_dataset(dataset_id, config, split=split)
    except Exception as exc:  # network, missing config or split: all reach the user the same way
        detail = " ".join(str(exc).split())[:200]
        if unreachable:
            raise DataFormatError(
                f"{source}: cannot load the Hugging Face dataset: it is not in the local cache "
                f"and {unreachable} ({detail}); load it once while online, or give a local file"
            ) from None
        raise DataFormatError(f"{source}: cannot load the Hugging Face dataset: {detail}") from exc
    return Records(dict(row) for row in ds)


@contextmanager
def _offline(datasets: Any) -> Iterator[None]:
    """`datasets` and the hub client in offline mode for the block (read at call time)."""
    import huggingface_hub.constants as hub

    modules = [m for m in (getattr(datasets, "config", None), hub) if m is not None]
    saved = [getattr(m, "HF_HUB_OFFLINE", False) for m in modules]
    for m in modules:
        m.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        for m, value in zip(modules, saved, strict=True):
            m.HF_HUB_OFFLINE = value


def find_split(folder: Path, stem: str) -> Path:
    """`folder/stem.json`, or the same file gzip-compressed or as JSON Lines.

    The shared data stores big files gzipped; a user's copy may not, so both are accepted.
    """
    tried = [folder / f"{stem}{ext}" for ext in (".json", ".json.gz", ".jsonl", ".jsonl.gz")]
    for path in tried:
        if path.is_file():
            return path
    raise DataFileNotFoundError(f"data file not found: {tried[0]} (also tried .json.gz, .jsonl)")


def with_gz_fallback(path: Path) -> Path:
    """`path` if it exists, else the same file with `.gz` added or removed."""
    if path.exists():
        return path
    name = path.name
    other = path.with_name(name[:-3] if name.endswith(".gz") else name + ".gz")
    return other if other.exists() else path
