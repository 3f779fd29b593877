import json
import math

import numpy as np
import pytest

from retain.eval.matrix import ScoreMatrix


def _matrix() -> ScoreMatrix:
    m = ScoreMatrix(
        ["boolq", "sst2, quoted", "gsm8k"],
        ["mmlu", "wikitext_ppl"],
        score_types={"boolq": "accuracy", "gsm8k": "exact_match", "wikitext_ppl": "perplexity"},
        decoding={"gsm8k": {"max_new_tokens": 64, "greedy": True}},
    )
    m.set_row(0, {"boolq": 50.0, "sst2, quoted": 49.123456, "gsm8k": 1.0}, {"mmlu": 30.0})
    m.set_row(1, {"boolq": 80.0, "sst2, quoted": 52.5, "gsm8k": 1.5}, {"wikitext_ppl": 21.7})
    return m


def test_new_matrix_is_all_nan_with_the_right_shapes():
    m = ScoreMatrix(["a", "b"], ["g"])
    assert m.R.shape == (3, 2) and m.G.shape == (3, 1)
    assert np.isnan(m.R).all() and np.isnan(m.G).all()
    assert m.rows_done() == 0 and not m.is_complete()
    assert ScoreMatrix(["a"]).G.shape == (2, 0)


def test_bad_construction_and_set_row_fail_loudly():
    with pytest.raises(ValueError):
        ScoreMatrix([])
    with pytest.raises(ValueError):
        ScoreMatrix(["a", "a"])
    m = ScoreMatrix(["a"], ["g"])
    with pytest.raises(IndexError):
        m.set_row(2, {"a": 1.0})
    with pytest.raises(KeyError):
        m.set_row(0, {"b": 1.0})
    with pytest.raises(KeyError):
        m.set_row(0, {"a": 1.0}, {"h": 1.0})


def test_rows_done_counts_only_the_finished_prefix():
    m = ScoreMatrix(["a", "b"])
    m.set_row(0, {"a": 1.0, "b": 2.0})
    assert m.rows_done() == 1
    m.set_row(1, {"a": 1.0})  # half a row is not a finished row
    assert m.rows_done() == 1 and not m.row_done(1)
    m.set_row(2, {"a": 1.0, "b": 2.0})  # row 2 done, but row 1 is still missing
    assert m.rows_done() == 1
    m.set_row(1, {"b": 3.0})
    assert m.rows_done() == 3 and m.is_complete()
    assert m.row(1) == {"a": 1.0, "b": 3.0}


def test_csv_format_and_round_trip_with_nan(tmp_path):
    m = _matrix()
    path = tmp_path / "run" / "scores.csv"
    m.to_csv(path)
    lines = path.read_text().splitlines()
    assert lines[0] == 'stage,boolq,"sst2, quoted",gsm8k,general:mmlu,general:wikitext_ppl'
    assert lines[1] == "0,50.0000,49.1235,1.0000,30.0000,"  # 4 decimals, empty cell for NaN
    assert lines[3] == "2,,,,,"
    assert len(lines) == 5  # stages 0..T
    assert [p.name for p in path.parent.iterdir()] == ["scores.csv"]  # no temp file left

    back = ScoreMatrix.from_csv(path)
    assert back.tasks == m.tasks and back.general == m.general
    assert np.allclose(back.R, m.R, equal_nan=True, atol=5e-5)
    assert np.allclose(back.G, m.G, equal_nan=True, atol=5e-5)
    assert np.isnan(back.R[2:]).all() and math.isnan(back.G[0, 1])
    assert back.rows_done() == 2
    assert back.score_types == {} and back.decoding == {}  # numbers only in the CSV

    m.set_row(2, {"boolq": 1.0})
    m.to_csv(path)  # overwrite in place
    assert ScoreMatrix.from_csv(path).R[2, 0] == 1.0


def test_from_csv_rejects_malformed_files(tmp_path):
    path = tmp_path / "scores.csv"
    path.write_text("task,a\n0,1\n1,2\n")
    with pytest.raises(ValueError, match="header"):
        ScoreMatrix.from_csv(path)
    path.write_text("stage,a,b\n0,1,2\n1,2,3\n")  # 2 tasks need 3 rows
    with pytest.raises(ValueError, match="3 stage rows"):
        ScoreMatrix.from_csv(path)
    path.write_text("stage,a\n1,1\n0,2\n")
    with pytest.raises(ValueError, match="expected 0"):
        ScoreMatrix.from_csv(path)
    path.write_text("stage,general:g,a\n0,1,1\n1,2,2\n")
    with pytest.raises(ValueError, match="general columns"):
        ScoreMatrix.from_csv(path)


def test_json_round_trip_is_exact_and_json_safe():
    m = _matrix()
    data = json.loads(json.dumps(m.to_json(), allow_nan=False))  # NaN must become null
    assert data["R"][2] == [None, None, None]
    back = ScoreMatrix.from_json(data)
    assert back == m  # full precision, score types and decoding included
    assert back.R[0, 1] == 49.123456
    assert back.decoding["gsm8k"]["max_new_tokens"] == 64
    data["R"] = data["R"][:2]
    with pytest.raises(ValueError, match="shape"):
        ScoreMatrix.from_json(data)
