"""gap_closed references and the data fingerprint they are matched by."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from retain.config import load_config
from retain.data.encoding import SampleStore
from retain.data.task import Example, Task
from retain.eval.evaluate import EncodedEvalSet
from retain.eval.matrix import ScoreMatrix
from retain.results.references import metrics_with_references
from retain.storage.fingerprint import data_fingerprint, fingerprint_differences


def _fingerprint(seed: int = 42, prompt: tuple[int, ...] = (1, 2, 3), method: str = "fixed",
                 label: int = 5) -> dict:
    cfg = load_config(None, [f"seed={seed}", f"methods=[{method}]"])
    store = SampleStore()
    store.add([1, 2, label], [-100, -100, label], 0)
    task = Task("t", [Example("p", "a")], [Example("p", "a")], "generate", "exact_match")
    sets = [EncodedEvalSet(task, task.test, [list(prompt)], None, None)]
    return data_fingerprint(cfg, store, [[0]], sets)


def test_the_fingerprint_follows_the_encoded_data() -> None:
    base = _fingerprint()
    assert base == _fingerprint() and len(base["digest"]) == 64
    assert fingerprint_differences(base, _fingerprint(prompt=(1, 2, 4))) == [
        "the tokenised evaluation sets differ"
    ]
    assert fingerprint_differences(base, _fingerprint(label=6)) == [
        "the tokenised training samples differ"
    ]
    assert fingerprint_differences(base, _fingerprint(seed=1)) == ["the seed (seed: 42 → 1)"]
    # the method is recorded but is no part of the data: references differ in method only
    other = _fingerprint(method="sequential")
    assert other["digest"] == base["digest"] and other["methods"] == ["sequential"]


def _matrix() -> ScoreMatrix:
    m = ScoreMatrix(["t"], [])
    m.set_row(0, {"t": 10.0}, {})
    m.set_row(1, {"t": 60.0}, {})
    return m


def _reference(group: Path, kind: str, ap: float, fingerprint: dict, **extra: object) -> None:
    (group / kind).mkdir(parents=True, exist_ok=True)
    fp = copy.deepcopy(fingerprint)
    fp["methods"] = [kind]
    metrics = {"ap": ap, "complete": True, "fingerprint": fp, **extra}
    (group / kind / "metrics.json").write_text(json.dumps(metrics))


def test_gap_closed_uses_references_of_the_same_data(tmp_path: Path) -> None:
    fp = _fingerprint()
    _reference(tmp_path, "sequential", 40.0, fp)
    _reference(tmp_path, "multitask", 80.0, fp)
    metrics = metrics_with_references(_matrix(), tmp_path / "fixed", fp)
    assert metrics["gap_closed"] == pytest.approx((60 - 40) / (80 - 40))
    assert metrics["gap_closed_note"] is None and metrics["fingerprint"] == fp
    assert set(metrics["gap_closed_references"]) == {"sequential", "multitask"}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("missing", "no multitask reference run at"),
        ("seed", "the seed (seed: 1 → 42)"),
        ("test_data", "the tokenised evaluation sets differ"),
        ("method", "is not a multitask run"),
        ("no_fingerprint", "has no data fingerprint"),
        ("incomplete", "is incomplete"),
    ],
)
def test_gap_closed_is_na_with_the_reason(tmp_path: Path, change: str, expected: str) -> None:
    fp = _fingerprint()
    _reference(tmp_path, "sequential", 40.0, fp)
    if change == "seed":
        _reference(tmp_path, "multitask", 80.0, _fingerprint(seed=1))
    elif change == "test_data":
        _reference(tmp_path, "multitask", 80.0, _fingerprint(prompt=(9,)))
    elif change == "method":
        _reference(tmp_path, "multitask", 80.0, fp)
        data = json.loads((tmp_path / "multitask" / "metrics.json").read_text())
        data["fingerprint"]["methods"] = ["fixed"]
        (tmp_path / "multitask" / "metrics.json").write_text(json.dumps(data))
    elif change == "no_fingerprint":
        _reference(tmp_path, "multitask", 80.0, fp)
        (tmp_path / "multitask" / "metrics.json").write_text('{"ap": 80.0, "complete": true}')
    elif change == "incomplete":
        _reference(tmp_path, "multitask", 80.0, fp, complete=False)
    metrics = metrics_with_references(_matrix(), tmp_path / "fixed", fp)
    assert metrics["gap_closed"] is None
    assert expected in metrics["gap_closed_note"]
    assert "multitask" in metrics["gap_closed_note"]


def test_a_reference_run_says_it_is_one(tmp_path: Path) -> None:
    fp = _fingerprint(method="sequential")
    _reference(tmp_path, "multitask", 80.0, fp)
    metrics = metrics_with_references(_matrix(), tmp_path / "sequential", fp)
    assert metrics["gap_closed"] is None
    assert metrics["gap_closed_note"] == "this run is the sequential reference"


def test_equal_references_leave_no_gap_to_close(tmp_path: Path) -> None:
    fp = _fingerprint()
    _reference(tmp_path, "sequential", 50.0, fp)
    _reference(tmp_path, "multitask", 50.0, fp)
    metrics = metrics_with_references(_matrix(), tmp_path / "fixed", fp)
    assert metrics["gap_closed"] is None and "equals" in metrics["gap_closed_note"]
