"""Readers: every file type, and errors that name the file, line and record."""

from __future__ import annotations

import gzip
import json
import sys
import types
from pathlib import Path

import pytest

from retain.data.readers import (
    DataFileNotFoundError,
    DataFormatError,
    Records,
    find_split,
    locate,
    parse_hf_id,
    read_records,
    with_gz_fallback,
)

ROWS = [{"prompt": "1+1=", "answer": "2"}, {"prompt": "2+2=", "answer": "4"}]


def test_json_list(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text(json.dumps(ROWS))
    assert read_records(path) == ROWS


def test_json_gz(tmp_path: Path) -> None:
    path = tmp_path / "a.json.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        json.dump(ROWS, f)
    assert read_records(path) == ROWS
    assert read_records(str(path)) == ROWS


def test_json_object_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"data": ROWS}))
    with pytest.raises(DataFormatError, match=r"a\.json: expected a JSON list of records"):
        read_records(path)


def test_json_non_object_record(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text(json.dumps([ROWS[0], "oops"]))
    with pytest.raises(DataFormatError, match=r"a\.json record 1: expected an object"):
        read_records(path)


def test_bad_json_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('[\n{"prompt": "x", "answer": "y"},\n{"prompt": "x" "answer": "y"}\n]')
    with pytest.raises(DataFormatError, match=r"bad\.json line 3 column \d+: invalid JSON"):
        read_records(path)


def test_jsonl_skips_blank_lines_and_keeps_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n" + json.dumps(ROWS[1]) + "\n")
    records = read_records(path)
    assert records == ROWS
    assert records.lines == [1, 3]
    assert locate("a.jsonl", records, 1) == "a.jsonl line 3 (record 1)"


def test_jsonl_gz(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(r) for r in ROWS))
    assert read_records(path) == ROWS


def test_bad_jsonl_line(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n{not json}\n")
    with pytest.raises(DataFormatError, match=r"x\.jsonl line 2 \(record 1\): invalid JSON"):
        read_records(path)


def test_jsonl_non_object(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n[1, 2]\n")
    with pytest.raises(DataFormatError, match=r"x\.jsonl line 2 \(record 1\): expected an object"):
        read_records(path)


def test_csv_with_header(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text('prompt,answer\n"1+1=, please",2\n2+2=,4\n')
    records = read_records(path)
    assert records == [{"prompt": "1+1=, please", "answer": "2"}, {"prompt": "2+2=", "answer": "4"}]
    assert records.lines == [2, 3]


def test_csv_wrong_column_count(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("prompt,answer\n1+1=,2\n2+2=,4,extra\n")
    with pytest.raises(DataFormatError, match=r"a\.csv line 3 \(record 1\): 3 columns, expected 2"):
        read_records(path)


def test_csv_fieldnames_for_headerless_files(tmp_path: Path) -> None:
    names = ["question", "a", "b"]
    bare = tmp_path / "bare.csv"
    bare.write_text("q1,x,y\nq2,z,w\n")
    with_header = tmp_path / "header.csv"
    with_header.write_text("question,a,b\nq1,x,y\nq2,z,w\n")
    expected = [{"question": "q1", "a": "x", "b": "y"}, {"question": "q2", "a": "z", "b": "w"}]
    assert read_records(bare, fieldnames=names) == expected
    assert read_records(with_header, fieldnames=names) == expected


def test_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    assert read_records(path) == ROWS


def test_plain_text_lines(tmp_path: Path) -> None:
    for name in ("a.txt", "a.raw"):
        path = tmp_path / name
        path.write_text(" first line \n\n   \nsecond\n")
        records = read_records(path)
        assert records == [{"text": " first line "}, {"text": "second"}]
        assert records.lines == [1, 4]


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(DataFileNotFoundError, match="nope.jsonl") as info:
        read_records(path)
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, DataFormatError)


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "a.xml"
    path.write_text("<a/>")
    with pytest.raises(DataFormatError, match=r"a\.xml: unknown data file type"):
        read_records(path)


def test_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "a.json.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataFormatError, match=r"a\.json\.gz: cannot decode"):
        read_records(path)


def test_parse_hf_id() -> None:
    assert parse_hf_id("hf:openai/gsm8k:main:test") == ("openai/gsm8k", "main", "test")
    assert parse_hf_id("hf:ag_news:train") == ("ag_news", None, "train")
    for bad in ("hf:only", "hf:a:b:c:d", "hf::train"):
        with pytest.raises(DataFormatError, match="expected hf:<id>"):
            parse_hf_id(bad)


def test_hf_dataset_loads_without_remote_code(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[tuple[object, ...], dict[str, object]]] = []

    def fake_load_dataset(*args: object, **kwargs: object) -> list[dict[str, str]]:
        calls.append((args, kwargs))
        return ROWS

    fake = types.ModuleType("datasets")
    fake.load_dataset = fake_load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    assert read_records("hf:org/name:cfg:validation") == ROWS
    args, kwargs = calls[0]
    assert args == ("org/name", "cfg")
    assert kwargs == {"split": "validation"}


def test_hf_errors_name_the_id(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(*args: object, **kwargs: object) -> None:
        raise ConnectionError("offline")

    fake = types.ModuleType("datasets")
    fake.load_dataset = failing  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    with pytest.raises(DataFormatError, match=r"hf:org/name:train: cannot load .*offline"):
        read_records("hf:org/name:train")


def test_find_split_and_gz_fallback(tmp_path: Path) -> None:
    gz = tmp_path / "train.json.gz"
    gz.write_bytes(b"")
    assert find_split(tmp_path, "train") == gz
    assert with_gz_fallback(tmp_path / "train.json") == gz
    assert with_gz_fallback(tmp_path / "other.json") == tmp_path / "other.json"
    with pytest.raises(DataFileNotFoundError, match="test.json"):
        find_split(tmp_path, "test")


def test_locate_without_lines() -> None:
    assert locate("f.json", [{}, {}], 1) == "f.json record 1"
    assert locate("f.jsonl", Records([{}], lines=[5]), 0) == "f.jsonl line 5 (record 0)"
