"""Row 0 scored once per bench: a cached row equals a computed one, and a change re-scores."""

from __future__ import annotations

import json
from pathlib import Path

from retain.config import load_config
from retain.storage.examples import ExampleResults
from retain.train.loop import run
from tests.test_engine import TINY

FAST = [*TINY, "data.num_tasks=2", "train.steps_per_task=2"]


def _row0(run_dir: Path) -> tuple[str, dict]:
    scores = (run_dir / "scores.csv").read_text().splitlines()[1]
    examples = ExampleResults.load(run_dir)
    return scores, {n: list(examples.get(0, n).scores) for n in examples.names()}


def _eval0(run_dir: Path) -> dict:
    return next(json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()
                if '"type": "eval"' in x and '"stage": 0' in x)


def test_a_cached_row_0_equals_the_computed_one(tmp_path: Path) -> None:
    cache = tmp_path / "row0"
    first = run(load_config(None, [*FAST, f"output_dir={tmp_path}", "name=a",
                                   f"eval.row0_cache={cache}"]))
    assert len(list(cache.glob("*.json"))) == 1 and not _eval0(first.run_dir)["cached"]
    second = run(load_config(None, [*FAST, f"output_dir={tmp_path}", "name=b", "methods=[mssr]",
                                    "seed=7", f"eval.row0_cache={cache}"]))
    plain = run(load_config(None, [*FAST, f"output_dir={tmp_path}", "name=c", "methods=[mssr]",
                                   "seed=7"]))
    assert _eval0(second.run_dir)["cached"] and not _eval0(plain.run_dir)["cached"]
    assert _row0(second.run_dir) == _row0(plain.run_dir) == _row0(first.run_dir)
    # the cached row reports the seconds its scoring took, not zero
    assert _eval0(second.run_dir)["seconds"] == _eval0(first.run_dir)["seconds"] > 0
    # other evaluation settings are another row 0
    run(load_config(None, [*FAST, f"output_dir={tmp_path}", "name=d", "eval.loglik_norm=sum",
                           f"eval.row0_cache={cache}"]))
    assert len(list(cache.glob("*.json"))) == 2


def test_the_key_follows_the_scoring_code_only(tmp_path: Path) -> None:
    """Editing a module that only reads scores keeps a bench's cached row 0; editing the scoring
    path, or adding a module under eval/, scores afresh."""
    from retain.eval.row0_cache import _code_digest

    root = tmp_path / "retain"
    for rel in ("eval/scoring.py", "eval/metrics.py", "eval/uncertainty.py",
                "data/encoding.py", "data/normalize.py", "models/loading.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"# {rel}\n")
    before = _code_digest(root)
    (root / "eval" / "metrics.py").write_text("def forgetting(): ...\n")
    (root / "eval" / "uncertainty.py").write_text("LEVEL = 0.9\n")
    assert _code_digest(root) == before
    (root / "eval" / "scoring.py").write_text("def score(): ...\n")
    after_scoring = _code_digest(root)
    assert after_scoring != before
    (root / "eval" / "new_scorer.py").write_text("def score(): ...\n")
    with_new_module = _code_digest(root)
    assert with_new_module != after_scoring
    (root / "models" / "loading.py").write_text("DTYPE = 'bf16'\n")
    after_loading = _code_digest(root)
    assert after_loading != with_new_module
    (root / "data" / "normalize.py").write_text("ARTICLES = ()\n")  # answer normalisation
    assert _code_digest(root) != after_loading
