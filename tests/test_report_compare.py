"""The comparison of runs (`compare_runs`): best run per metric, paired differences against
the baseline, refusals to pair, seeds combined, Markdown and CSV, from crafted run directories."""

import csv
import json
from pathlib import Path

import matplotlib.image
import pytest

from retain.eval.crossfit import XFIT_METRICS
from retain.eval.matrix import ScoreMatrix
from retain.eval.metrics import compute_metrics
from retain.eval.paired_differences import paired_difference
from retain.eval.seeds import combine_seeds
from retain.eval.uncertainty import bootstrap_metrics
from retain.results.report import compare_runs, write_report
from retain.results.view import higher_is_better, unit
from retain.storage.examples import ExampleResults
from tests.test_report import (
    GIT_SHA,
    SCORES_A,
    SCORES_B,
    TASKS,
    ap_of,
    assert_images_load,
    make_run,
    parse,
    row_of,
    table_with,
)


def test_compare_runs_tables_and_best(tmp_path):
    a = make_run(tmp_path, "seq", SCORES_B, replay=False, methods=("sequential",))
    b = make_run(tmp_path, "mssr", SCORES_A)
    write_report(b)
    out = compare_runs([a, b], tmp_path / "cmp")
    assert out == tmp_path / "cmp" / "comparison.html"
    names = {p.name for p in assert_images_load(out)}
    assert names == {"comparison_matrices.png", "comparison_curves.png", "comparison.png"}
    page = parse(out)
    mt = table_with(page, "metric")
    assert [h for h, _ in mt[0]] == ["metric", "better", "seq", "mssr"]
    ap = row_of(mt, "ap")
    assert ap[2][0].startswith("48.33 [") and ap[3][0].startswith("68.33 [")
    assert ap[3][1] == "best" and ap[2][1] == ""
    # forgetting_max is better when lower: seq 42.5 = ((70-20)+(75-40))/2, mssr 17.5
    fa = compute_metrics(ScoreMatrix.from_csv(a / "scores.csv"))["forgetting_max"]
    fb = compute_metrics(ScoreMatrix.from_csv(b / "scores.csv"))["forgetting_max"]
    fm = row_of(mt, "forgetting_max")
    assert fm[1][0] == "↓" and (fa, fb) == (42.5, 17.5)
    assert fm[3][1] == "best" and fm[2][1] == ""
    text = out.read_text()
    assert "replayed_share" in text and 'href="../mssr/report.html"' in text
    assert GIT_SHA in text
    # a warning shared by runs is said once, naming the runs
    assert text.count("mssr replayed 3 samples only") == 1
    assert "seq, mssr: warning: mssr replayed 3 samples only" in text
    with pytest.raises(ValueError):
        compare_runs([], tmp_path / "cmp")


def _csv_rows(path: Path) -> dict[tuple[str, str], dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return {(r["metric"], r["run"]): r for r in csv.DictReader(f)}


def test_compare_runs_paired_difference_is_marked(tmp_path):
    a = make_run(tmp_path, "seq", SCORES_B, replay=False, methods=("sequential",))
    b = make_run(tmp_path, "mssr", SCORES_A)
    # c is a by 3 examples more on one task, but gets other examples right: not significant
    scores_c = [r[:] for r in SCORES_B[:3]] + [[20, 40, 90]]
    c = make_run(tmp_path, "close", scores_c, methods=("ewc",), order_seed=8)
    out = compare_runs([a, b, c], tmp_path / "cmp")
    expected = paired_difference(ExampleResults.load(b), ExampleResults.load(a), TASKS, ["mmlu"])
    rows = _csv_rows(tmp_path / "cmp" / "comparison.csv")
    ap = rows[("ap", "mssr")]
    assert float(ap["diff_vs_baseline"]) == pytest.approx(ap_of(SCORES_A) - ap_of(SCORES_B))
    assert float(ap["diff_low"]) == pytest.approx(expected["ap"]["low"])
    assert expected["ap"]["low"] > 0
    assert ap["significant"] == "True" and ap["best"] == "True"
    close = rows[("ap", "close")]
    assert close["significant"] == "False"
    assert float(close["diff_low"]) < 0 < float(close["diff_high"])
    assert (
        rows[("ap", "seq")]["baseline"] == "True" and rows[("ap", "seq")]["diff_vs_baseline"] == ""
    )
    dt = [t for t in parse(out).tables if t and any("−" in h for h, _ in t[0])][0]
    ap_row = row_of(dt, "ap")
    assert ap_row[2][0].endswith("*") and "sig" in ap_row[2][1] and "better" in ap_row[2][1]
    assert not ap_row[3][0].endswith("*") and "sig" not in ap_row[3][1]
    # lower is better: mssr's negative delta is "better"; the papers' plug-in gets no test
    fm = row_of(dt, "forgetting_max_xfit")
    assert fm[2][0].startswith("-") and "better" in fm[2][1]
    assert row_of(dt, "forgetting_max")[2][0] == "n/a"
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| `ap` | ↑ | 48.33 [" in md and "**68.33 [" in md
    assert "## Paired difference against seq" in md and "+20.00 [" in md


def test_paired_difference_of_identical_runs_is_zero(tmp_path):
    a = make_run(tmp_path / "x", "same", SCORES_A)
    b = make_run(tmp_path / "y", "same", SCORES_A)
    out = compare_runs([a, b], tmp_path / "cmp")
    text = out.read_text()
    assert str(a) in text and str(b) in text  # equal names are disambiguated
    rows = _csv_rows(tmp_path / "cmp" / "comparison.csv")
    row = rows[("ap", f"same ({b})")]
    assert float(row["diff_vs_baseline"]) == 0.0
    assert float(row["diff_low"]) == 0.0 == float(row["diff_high"])
    assert row["significant"] == "False"
    # all runs tie: none is highlighted as best
    assert rows[("ap", f"same ({a})")]["best"] == "False" == row["best"]
    assert 'class="best"' not in text


def test_compare_runs_refuses_to_pair_different_examples_or_tasks(tmp_path):
    a = make_run(tmp_path, "a", SCORES_A, n=60)
    b = make_run(tmp_path, "b", SCORES_B, n=20, seed=1)
    c = make_run(tmp_path, "c", SCORES_B, tasks=["x", "y", "z"])
    d = make_run(tmp_path, "d", SCORES_B, examples=False)
    out = compare_runs([a, b, c, d], tmp_path / "cmp")
    text = out.read_text()
    assert "b is not paired with a: &#x27;boolq&#x27; has 20 test examples in b and 60 in a" in text
    assert "c is not paired with a: different tasks (or task order) than the baseline" in text
    assert "d is not paired with a: no examples.npz in d" in text
    assert not [t for t in parse(out).tables if t and any("−" in h for h, _ in t[0])]
    rows = _csv_rows(tmp_path / "cmp" / "comparison.csv")
    assert (
        rows[("ap", "b")]["diff_vs_baseline"] == ""
        and "20 test examples" in rows[("ap", "b")]["note"]
    )
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "- c is not paired with a: different tasks" in md
    assert "- b: Fewer than 50 test examples per task" in md  # the noise note of run b
    assert "differences of a few points are noise" in text


def test_compare_runs_combines_seeds(tmp_path):
    s1 = make_run(tmp_path, "mssr-s1", SCORES_A, seed=1)
    s2 = make_run(tmp_path, "mssr-s2", SCORES_B, seed=2)
    other = make_run(tmp_path, "ewc", SCORES_B, seed=3, methods=("ewc",))
    out = compare_runs([s1, other, s2], tmp_path / "cmp")
    text = out.read_text()
    assert "Seeds of one configuration" in text
    assert "mssr-s1 (seed 1), mssr-s2 (seed 2)" in text and "ewc (seed" not in text
    expected = combine_seeds([{"ap": ap_of(SCORES_A)}, {"ap": ap_of(SCORES_B)}])["ap"]
    seeds = table_with(parse(out), "mean")
    row = row_of(seeds, "ap")
    assert row[2][0] == f"{expected['mean']:.2f} [{expected['low']:.2f}, {expected['high']:.2f}]"
    assert row[4][0] == "2"
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "## Seeds combined: mssr-s1 (seed 1), mssr-s2 (seed 2)" in md


def test_compare_heatmaps_side_by_side(tmp_path):
    a = make_run(tmp_path, "a", SCORES_A)
    compare_runs([a], tmp_path / "one")
    one = matplotlib.image.imread(tmp_path / "one" / "comparison_matrices.png")
    b = make_run(tmp_path, "b", SCORES_B)
    c = make_run(tmp_path, "c", SCORES_B)
    compare_runs([a, b, c], tmp_path / "three")
    three = matplotlib.image.imread(tmp_path / "three" / "comparison_matrices.png")
    assert three.shape[0] == one.shape[0] and three.shape[1] > 2.5 * one.shape[1]


def test_compare_an_old_run_without_examples_or_metrics(tmp_path):
    new = make_run(tmp_path, "new", SCORES_A)
    old = make_run(tmp_path, "old", SCORES_B, metrics=False, examples=False)
    (old / "environment.json").unlink()
    out = compare_runs([new, old], tmp_path / "cmp")
    assert_images_load(out)
    text = out.read_text()
    assert "old is not paired with new: no examples.npz in old" in text
    assert "git SHA unknown" in text
    ap = row_of(table_with(parse(out), "metric"), "ap")
    assert ap[2][0].startswith("68.33 [") and ap[3][0] == "48.33"  # no interval for old
    assert ap[2][1] == "" == ap[3][1]  # runs that cannot be paired are not ranked
    rows = _csv_rows(tmp_path / "cmp" / "comparison.csv")
    assert rows[("ap", "old")]["ci_low"] == "" and rows[("ap", "old")]["value"] == str(
        ap_of(SCORES_B)
    )


def test_compare_runs_of_empty_directories(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    out = compare_runs([tmp_path / "a", tmp_path / "b"], tmp_path / "cmp")
    assert_images_load(out)  # the bar chart, empty
    assert "b is not paired with a" in out.read_text()
    assert (tmp_path / "cmp" / "comparison.csv").read_text().startswith("metric,direction,")


def test_compare_runs_shows_each_general_benchmark_s_change(tmp_path):
    a = make_run(tmp_path, "seq", SCORES_B, replay=False, methods=("sequential",), ci=False)
    b = make_run(tmp_path, "mssr", SCORES_A, ci=False)
    compare_runs([a, b], tmp_path / "cmp")
    rows = _csv_rows(tmp_path / "cmp" / "comparison.csv")
    row = rows[("general_delta:mmlu", "mssr")]
    expected = paired_difference(ExampleResults.load(b), ExampleResults.load(a), TASKS, ["mmlu"])
    diff = expected["general_delta:mmlu"]
    assert diff is not None
    assert float(row["diff_vs_baseline"]) == pytest.approx(diff["value"])
    assert float(row["diff_low"]) == pytest.approx(diff["low"])
    assert row["unit"] == "score points" and row["direction"] == "higher is better"
    assert "| `general_delta:mmlu` | ↑ |" in (tmp_path / "cmp" / "comparison.md").read_text()


def test_a_perplexity_change_is_better_when_lower():
    assert not higher_is_better("general_delta:wikitext_ppl") and unit(
        "general_delta:wikitext_ppl") == "perplexity"
    assert higher_is_better("general_delta:arc_easy") and unit("general_delta:arc_easy") == (
        "score points")
    assert not higher_is_better("forgetting_max") and higher_is_better("general_delta")


def test_a_metric_newer_than_the_run_is_computed_for_the_report(tmp_path):
    a = make_run(tmp_path, "seq", SCORES_B, replay=False, methods=("sequential",))
    b = make_run(tmp_path, "mssr", SCORES_A)
    for run in (a, b):  # as written before forgetting_first and the cross-fits existed
        stored = json.loads((run / "metrics.json").read_text())
        del stored["forgetting_first"], stored["ci"]["forgetting_first"]
        for name in XFIT_METRICS:
            del stored["ci"][name]
        stored["ci"]["ap"]["low"] = 1.25  # a stored interval is kept, not recomputed
        stored["ci"]["forgetting_max"]["low"] = 0.0  # a plug-in's old interval is not shown
        (run / "metrics.json").write_text(json.dumps(stored))
    compare_runs([a, b], tmp_path / "cmp")
    rows = _csv_rows(tmp_path / "cmp" / "comparison.csv")
    res = ExampleResults.load(a)
    fresh = bootstrap_metrics(res, TASKS, ["mmlu"], seed=42)  # the run's seed
    row = rows[("forgetting_first", "seq")]
    matrix = ScoreMatrix.from_csv(a / "scores.csv")
    assert float(row["value"]) == compute_metrics(matrix)["forgetting_first"]
    assert float(row["value"]) == fresh["forgetting_first"]["value"]
    assert row["ci_low"] == row["ci_high"] == "" == rows[("forgetting_max", "seq")]["ci_low"]
    xfit = rows[("forgetting_first_xfit", "seq")]
    want = fresh["forgetting_first_xfit"]
    assert (float(xfit["value"]), float(xfit["ci_low"]), float(xfit["ci_high"])) == (
        want["value"], want["low"], want["high"])
    assert rows[("forgetting_first_xfit", "mssr")]["diff_vs_baseline"] != ""
    assert float(rows[("ap", "seq")]["ci_low"]) == 1.25
