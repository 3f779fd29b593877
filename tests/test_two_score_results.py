"""Both scores read back from a run: re-scoring, the exact format/knowledge split, metrics.json,
the report sections, and old runs with one score."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from retain.bench.aggregate import SeedRun
from retain.bench.two_scores import by_score, score_lines
from retain.eval.matrix import ScoreMatrix
from retain.eval.metrics import compute_metrics
from retain.eval.uncertainty import bootstrap_metrics
from retain.results.format_split import forgetting_split
from retain.results.report import write_report
from retain.results.scorers import cell_means, rescored, scores_present
from retain.results.summary import summary_lines
from retain.results.two_score_summary import two_score_summary
from retain.results.view import RunView
from retain.storage.examples import ExampleResults
from retain.storage.generations import update_generations

TASKS = ["dbpedia", "amazon", "yahoo"]
N = 40


def _crafted(seed: int = 0) -> ExampleResults:
    """Per-example valid / generate / loglik of a 3-task run, every cell evaluated; only valid
    answers can be right (exact match), as with a label set."""
    rng = np.random.default_rng(seed)
    res = ExampleResults()
    for i, task in enumerate(TASKS):
        for stage in range(len(TASKS) + 1):
            learned = stage >= i + 1
            valid = (rng.random(N) < (0.9 if learned else 0.4)).astype(float)
            right = valid * (rng.random(N) < (0.7 if stage == i + 1 else 0.4))
            loglik = (rng.random(N) < (0.8 if learned else 0.3)).astype(float)
            ids = [f"{task}-{k}" for k in range(N)]  # as runs record them
            res.set(stage, task, right, {"generate": right, "loglik": loglik, "valid": valid},
                    ids=ids)
    return res


def _run_dir(root: Path, res: ExampleResults, *, metrics: bool = True) -> Path:
    run = root / "run"
    run.mkdir()
    m = ScoreMatrix(TASKS, [])
    for stage in range(len(TASKS) + 1):
        m.set_row(stage, {t: res.get(stage, t).value() for t in TASKS}, {})
        for t in TASKS:
            m.score_types[t] = "olora_exact"
            m.decoding[t] = {"primary": "generate", "loglik_norm": "bytes",
                             "generation_metric": "olora_exact"}
    m.to_csv(run / "scores.csv")
    res.save(run)
    valid = res.get(3, "dbpedia").extra["valid"]
    texts = ["positive" if not v else "Company" for v in valid]
    update_generations(run / "generations.jsonl.gz", 3, {"dbpedia": texts})
    if metrics:
        (run / "metrics.json").write_text(json.dumps(
            two_score_summary(res, TASKS, (), seed=1, run_dir=run, n_resamples=200)
        ))
    return run


def test_rescored_run_scores_by_the_other_column() -> None:
    res = _crafted()
    assert scores_present(res, TASKS) == ["generate", "loglik"]
    by_options = rescored(res, TASKS, "loglik")
    for t in TASKS:
        assert by_options.get(3, t).scores.tolist() == res.get(3, t).extra["loglik"].tolist()
    means = cell_means(res, TASKS, "loglik", 4)
    ap = bootstrap_metrics(by_options, TASKS, n_resamples=50)["ap"]["value"]
    assert ap == pytest.approx(means[3].mean())
    assert ap != pytest.approx(bootstrap_metrics(res, TASKS, n_resamples=50)["ap"]["value"])


def test_format_and_knowledge_add_up_to_the_generation_change_exactly() -> None:
    res = _crafted()
    split = forgetting_split(res, TASKS, n_resamples=200, seed=3)
    assert split["bwt_tasks"] == TASKS[:2]
    for i, task in enumerate(TASKS[:2], start=1):
        parts = {k: v["value"] for k, v in split["tasks"][task].items()}
        g = [res.get(s, task).extra["generate"] for s in (i, 3)]
        v = [res.get(s, task).extra["valid"] for s in (i, 3)]
        G, V = [x.mean() for x in g], [x.mean() for x in v]
        C = [gg.sum() / vv.sum() for gg, vv in zip(g, v, strict=True)]
        assert parts["delta_g"] == pytest.approx(100 * (G[1] - G[0]))
        assert parts["format"] == pytest.approx(100 * (V[1] - V[0]) * (C[0] + C[1]) / 2)
        assert parts["knowledge"] == pytest.approx(100 * (C[1] - C[0]) * (V[0] + V[1]) / 2)
        assert parts["format"] + parts["knowledge"] == pytest.approx(parts["delta_g"])
        assert parts["residual"] == pytest.approx(0.0, abs=1e-9)
        ll = [res.get(s, task).extra["loglik"].mean() for s in (i, 3)]
        assert parts["delta_loglik"] == pytest.approx(100 * (ll[1] - ll[0]))
    bwt = split["bwt"]
    assert bwt["delta_g"]["value"] == pytest.approx(
        np.mean([split["tasks"][t]["delta_g"]["value"] for t in TASKS[:2]])
    )
    assert bwt["delta_g"]["low"] <= bwt["delta_g"]["value"] <= bwt["delta_g"]["high"]


def test_metrics_summary_report_and_re_rendering(tmp_path: Path) -> None:
    res = _crafted()
    run = _run_dir(tmp_path, res)
    two = json.loads((run / "metrics.json").read_text())["two_scores"]
    valid = res.get(3, "dbpedia").extra["valid"]
    assert two["valid_rate"][3][0] == pytest.approx(100 * valid.mean())
    assert two["invalid_answers"]["dbpedia"]["3"] == [["positive", int((valid == 0).sum())]]
    metrics = {"la": 50.0, **json.loads((run / "metrics.json").read_text())}
    lines = summary_lines([("seq", metrics)])
    assert any(ln.startswith("seq by loglik: ap") for ln in lines)
    assert any("= format" in ln and "knowledge" in ln for ln in lines)
    html = write_report(run).read_text()
    assert "v: valid-answer rate" in html and "knowledge ΔC·mean(V)" in html
    assert "<code>positive</code>" in html
    # the primary switched to options without training: the matrix is the loglik one
    view = RunView(run, "loglik")
    assert view.matrix.R[3] == pytest.approx(cell_means(res, TASKS, "loglik", 4)[3])
    assert view.matrix.score_types["dbpedia"] == "accuracy_norm"
    assert view.value("ap") == pytest.approx(cell_means(res, TASKS, "loglik", 4)[3].mean())
    assert "Re-rendered with loglik" in write_report(run, "loglik").read_text()


def test_an_old_run_with_one_score_still_renders_and_says_so(tmp_path: Path) -> None:
    res = ExampleResults()
    for stage in range(4):
        for t in TASKS:
            res.set(stage, t, np.ones(5) * (stage % 2))
    run = tmp_path / "old"
    run.mkdir()
    m = ScoreMatrix(TASKS, [])
    for stage in range(4):
        m.set_row(stage, {t: 100.0 * (stage % 2) for t in TASKS}, {})
    m.to_csv(run / "scores.csv")
    res.save(run)
    scoring = {t: {"score_type": "accuracy_norm"} for t in TASKS}
    (run / "metrics.json").write_text(json.dumps({"scoring": scoring}))
    assert scores_present(res, TASKS) == [] and two_score_summary(res, TASKS) == {}
    html = write_report(run).read_text()
    assert "carries one score per task (accuracy_norm)" in html
    view = RunView(run, "generate")
    assert any("has no generate score" in p for p in view.problems)


def _seed_run(method: str, seed: int, res: ExampleResults, root: Path) -> SeedRun:
    m = ScoreMatrix(TASKS, [])
    for stage in range(len(TASKS) + 1):
        m.set_row(stage, {t: res.get(stage, t).value() for t in TASKS}, {})
    return SeedRun(method, seed, root, list(TASKS), [], res, compute_metrics(m), m)


def test_bench_summarises_each_score_with_paired_differences(tmp_path: Path) -> None:
    runs = {("sequential", 0): _seed_run("sequential", 0, _crafted(0), tmp_path),
            ("fixed", 0): _seed_run("fixed", 0, _crafted(5), tmp_path)}
    summaries = by_score(["sequential", "fixed"], [0], runs)
    assert list(summaries) == ["generate", "loglik"]
    for score, summary in summaries.items():
        expected = {
            key: cell_means(r.examples, TASKS, score, 4)[3].mean() for key, r in runs.items()
        }
        assert summary.quality["fixed"]["ap"].mean == pytest.approx(expected[("fixed", 0)])
        diff = summary.differences["fixed"]["ap"]
        assert diff.mean == pytest.approx(expected[("fixed", 0)] - expected[("sequential", 0)])
        assert diff.low is not None and diff.low <= diff.mean <= diff.high
    lines = score_lines(summaries)
    assert lines[0] == "by generate:" and any("vs sequential: ap" in ln for ln in lines)
