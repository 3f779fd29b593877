import math
import os

import numpy as np
import pytest

import retain.storage.examples as examples_module
from retain.storage.examples import EXAMPLES_FILE, ExampleResults


def _results() -> ExampleResults:
    """Two tasks (b not evaluated at stage 1), one scored and one perplexity general column."""
    r = ExampleResults()
    r.set(0, "a", [1, 0, 1], extra={"accuracy_norm": [1, 1, 0]}, ids=["a0", "a1", "a2"])
    r.set(1, "a", [1, 1, 1], extra={"accuracy_norm": [0, 1, 0]})
    r.set(2, "a", [0.25, 0.5, 0.0], extra={"accuracy_norm": [0, 0, 0]})
    r.set(0, "b", [0.1, 0.2, 0.3, 0.4])
    r.set(2, "b", [0.5, 0.6, 0.7, 0.8])
    r.set(0, "mmlu", [1, 0])
    r.set_perplexity(0, "wikitext_ppl", [10.0, 20.0], [5, 15])
    r.set_perplexity(2, "wikitext_ppl", [12.0, 18.0], [5, 15])
    return r


def test_cells_set_get_and_unevaluated_cells_are_absent():
    r = _results()
    assert r.get(1, "b") is None and not r.has(1, "b")
    assert r.get(0, "missing") is None and r.n_examples("missing") == 0
    assert r.stages() == [0, 1, 2]
    assert r.stages_of("b") == [0, 2]
    assert r.n_per_task(["a", "b"]) == {"a": 3, "b": 4}
    cell = r.get(1, "a")
    assert cell is not None and cell.n == 3
    np.testing.assert_array_equal(cell.extra["accuracy_norm"], [0, 1, 0])
    assert r.ids("a") == ["a0", "a1", "a2"] and r.ids("b") is None
    assert r.kind("wikitext_ppl") == "perplexity" and r.kind("a") == "score"


def test_cell_values_match_the_matrix_formulas():
    r = _results()
    # task_score: 100 * sum / n; perplexity: exp(total nll / total tokens)
    assert r.get(0, "b").value() == 100.0 * sum([0.1, 0.2, 0.3, 0.4]) / 4
    assert r.get(2, "a").value() == 100.0 * 0.75 / 3
    assert r.get(0, "wikitext_ppl").value() == pytest.approx(math.exp(30.0 / 20.0), rel=1e-15)


def test_stacked_gives_evaluated_stages_only():
    stages, values = _results().stacked("b")
    np.testing.assert_array_equal(stages, [0, 2])
    np.testing.assert_array_equal(values, [[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]])


def test_npz_round_trip_keeps_everything_and_absent_cells(tmp_path):
    r = _results()
    path = r.save(tmp_path)
    assert path == tmp_path / EXAMPLES_FILE and path.exists()
    back = ExampleResults.load(tmp_path)
    assert back == r
    assert back.get(1, "b") is None and back.stages_of("b") == [0, 2]
    assert back.ids("a") == ["a0", "a1", "a2"]
    np.testing.assert_array_equal(back.get(2, "wikitext_ppl").token_count, [5, 15])
    with np.load(path, allow_pickle=False) as data:  # readable without pickles
        assert {"format", "names", "kinds", "c0.stages", "c0.scores"} <= set(data.files)
        assert all(data[k].dtype != object for k in data.files)
        assert list(data["names"]) == ["a", "b", "mmlu", "wikitext_ppl"]
        np.testing.assert_array_equal(data["c1.stages"], [0, 2])
        assert data["c1.scores"].shape == (2, 4)


def test_save_accepts_a_file_path_and_overwrites(tmp_path):
    r = _results()
    target = tmp_path / "sub" / "other.npz"
    assert r.save(target) == target
    r.set(1, "b", [1, 1, 1, 1])
    r.save(target)
    assert ExampleResults.load(target).get(1, "b") is not None


def test_write_is_atomic_a_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    r = _results()
    r.save(tmp_path)
    before = (tmp_path / EXAMPLES_FILE).read_bytes()

    def torn_write(f: object, **arrays: object) -> None:
        f.write(b"PK\x03\x04 half a zip")  # type: ignore[attr-defined]
        raise OSError("disk full")

    monkeypatch.setattr(examples_module.np, "savez_compressed", torn_write)
    changed = _results()
    changed.set(1, "b", [0, 0, 0, 0])
    with pytest.raises(OSError, match="disk full"):
        changed.save(tmp_path)
    assert (tmp_path / EXAMPLES_FILE).read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == [EXAMPLES_FILE]  # no temp file left behind
    assert ExampleResults.load(tmp_path) == r


def test_dict_round_trip_is_checkpoint_friendly():
    r = _results()
    d = r.to_dict()
    for key, value in d.items():
        ok = isinstance(value, int) or (isinstance(value, np.ndarray) and value.dtype.kind in "fi")
        ok = ok or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        assert ok, key
    assert ExampleResults.from_dict(d) == r


def test_round_trip_through_a_real_checkpoint(tmp_path):
    pytest.importorskip("safetensors")
    from retain.train.checkpoint import load_checkpoint, save_checkpoint

    r = _results()
    save_checkpoint(tmp_path / "ckpt", {"examples": r.to_dict()})
    state = load_checkpoint(tmp_path / "ckpt")
    assert state is not None
    assert ExampleResults.from_dict(state["examples"]) == r


def test_equality_sees_a_changed_score():
    a, b = _results(), _results()
    assert a == b
    b.set(2, "b", [0.5, 0.6, 0.7, 0.9])
    assert a != b


def test_bad_input_fails_loudly():
    r = _results()
    with pytest.raises(ValueError, match="examples, but this column has 3"):
        r.set(1, "a", [1, 0])  # example order and count are fixed per column
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        r.set(3, "c", [1.5])
    with pytest.raises(ValueError, match="non-finite"):
        r.set(3, "c", [math.nan])
    with pytest.raises(ValueError, match="at least one"):
        r.set(0, "c", [])
    with pytest.raises(ValueError, match="perplexity column"):
        r.set(1, "wikitext_ppl", [1, 0])
    with pytest.raises(ValueError, match="score column"):
        r.set_perplexity(1, "a", [1, 1, 1], [1, 1, 1])
    with pytest.raises(ValueError, match="ids differ"):
        r.set(1, "a", [1, 1, 1], extra={"accuracy_norm": [0, 0, 0]}, ids=["x", "y", "z"])
    with pytest.raises(ValueError, match="2 ids for 3"):
        r.set(1, "a", [1, 1, 1], extra={"accuracy_norm": [0, 0, 0]}, ids=["a0", "a1"])
    with pytest.raises(ValueError, match="extra metrics"):
        r.set(1, "a", [1, 1, 1])
    with pytest.raises(ValueError, match="non-negative"):
        r.set(-1, "b", [0, 0, 0, 0])
    with pytest.raises(ValueError, match=">= 0"):
        r.set_perplexity(1, "wikitext_ppl", [1.0, -1.0], [1, 1])
    with pytest.raises(ValueError, match="format"):
        ExampleResults.from_dict({**r.to_dict(), "format": 99})
    # a failed set leaves the earlier cell untouched
    np.testing.assert_array_equal(r.get(1, "a").scores, [1, 1, 1])
