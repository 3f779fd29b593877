"""A bench's view of forgetting and of the papers: generation BWT split into format and
knowledge per method, and each paper's declared ordering judged by paired differences."""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

import numpy as np
import pytest

from retain.bench.aggregate import SeedRun, summarise
from retain.bench.claims import judge_claims, paper_claims, stand_ins, verdict
from retain.bench.table import csv_text, markdown, summary_lines
from retain.config import dump_config, load_config
from retain.eval.matrix import ScoreMatrix
from retain.eval.stats import Estimate
from retain.eval.uncertainty import point_metrics
from retain.methods.names import catalogue
from retain.methods.spec import PaperClaim
from retain.results.format_split import forgetting_split
from tests.test_bench import TASKS, crafted, full_cells
from tests.test_two_score_results import TASKS as SPLIT_TASKS
from tests.test_two_score_results import _crafted


def _split_run(method: str, seed: int, data_seed: int) -> SeedRun:
    """A finished run with generation, validity and option scores in every cell."""
    examples = _crafted(data_seed)
    matrix = ScoreMatrix(SPLIT_TASKS)
    for stage in range(len(SPLIT_TASKS) + 1):
        for i, task in enumerate(SPLIT_TASKS):
            matrix.R[stage, i] = 100.0 * examples.get(stage, task).value()
    metrics = {**point_metrics(examples, SPLIT_TASKS), "complete": True}
    return SeedRun(method, seed, Path(f"/nowhere/{method}"), SPLIT_TASKS, [], examples, metrics,
                   matrix)


def test_the_bench_splits_each_method_s_bwt_into_format_and_knowledge() -> None:
    runs = {(m, s): _split_run(m, s, 10 * s + k) for k, m in enumerate(("sequential", "m"))
            for s in (1, 2)}
    summary = summarise(["sequential", "m"], [1, 2], runs, n_resamples=200, seed=5)
    for method in ("sequential", "m"):
        q = summary.quality[method]
        per_seed = [forgetting_split(runs[(method, s)].examples, SPLIT_TASKS, 50)["bwt"]
                    for s in (1, 2)]
        assert q["bwt_format"].mean == pytest.approx(
            np.mean([p["format"]["value"] for p in per_seed]))
        assert q["bwt_knowledge"].mean == pytest.approx(
            np.mean([p["knowledge"]["value"] for p in per_seed]))
        # generation is the primary score and exact match credits valid answers only
        assert q["bwt_format"].mean + q["bwt_knowledge"].mean == pytest.approx(q["bwt"].mean)
        assert q["bwt_format"].low < q["bwt_format"].mean < q["bwt_format"].high
    diff = summary.differences["m"]["bwt_knowledge"]
    assert diff.mean == pytest.approx(summary.quality["m"]["bwt_knowledge"].mean
                                      - summary.quality["sequential"]["bwt_knowledge"].mean)
    assert "bwt: format" in markdown(summary, "t")


def test_runs_without_generation_scores_show_no_split() -> None:
    run = crafted("m", 42, full_cells([[0, 0], [1, 0], [0.5, 1]]), TASKS)
    summary = summarise(["m"], [42], {("m", 42): run}, n_resamples=50)
    assert summary.quality["m"]["bwt_format"] is None
    assert "bwt: format" not in markdown(summary, "t")


def test_every_declared_claim_names_catalogued_methods() -> None:
    names = {n for spec in catalogue() for n in spec.names}
    claims = [c for spec in catalogue() for c in spec.claims]
    assert {c.paper for c in claims} == {"MSSR", "GeRe", "ProCL"}
    for claim in claims:
        assert {claim.better, claim.worse} <= names, claim.text


def test_only_claims_whose_two_methods_ran_are_tested() -> None:
    texts = [c.text for c in paper_claims(["sequential", "fixed", "mssr", "procl", "olora"])]
    assert texts == ["mssr > fixed", "fixed > sequential", "procl > olora"]
    assert paper_claims(["gere", "procl"]) == []


def _est(mean: float, p: float) -> Estimate:
    return Estimate(mean, mean - 1, mean + 1, 2, p=p)


def test_claims_are_judged_with_holm_within_each_paper() -> None:
    claims = [PaperClaim("a", "b", "P"), PaperClaim("b", "c", "P"),
              PaperClaim("c", "d", "P"), PaperClaim("x", "y", "Q"),
              PaperClaim("u", "v", "Q", relation="≈")]
    # P: p-values 0.01, 0.02, 0.03 -> Holm 0.03, 0.04, 0.04: all below 0.05
    # Q alone, 0.04 would pass; with its partner's 0.30 Holm makes it 0.08
    diffs = {("a", "b"): _est(+3, 0.01), ("b", "c"): _est(-2, 0.02), ("c", "d"): _est(+1, 0.03),
             ("x", "y"): _est(+4, 0.04), ("u", "v"): _est(0.5, 0.30)}
    results = judge_claims(claims, lambda b, w: diffs[(b, w)])
    assert [r.verdict for r in results] == [
        "reproduced", "reversed", "reproduced", "unresolved", "no difference resolved"]
    assert all(r.difference.correction == "holm" for r in results)
    assert results[0].difference.mean == 3


def test_a_level_claim_with_a_resolved_difference_differs_and_a_missing_one_is_said() -> None:
    level = PaperClaim("u", "v", "Q", relation="≈")
    assert verdict(level, Estimate(2.0, 1.0, 3.0, 2, significant=True)) == "differ"
    assert judge_claims([level], lambda b, w: None)[0].verdict == "not measured"


def test_a_bench_tests_a_paper_s_ordering_on_paired_runs() -> None:
    # fixed beats sequential by 25 ap on every example (exact), mssr ties fixed (paired: exactly 0)
    seq = full_cells([[0, 0], [1, 0], [0, 1]])
    better = full_cells([[0, 0], [1, 0], [0.5, 1]])
    runs = {}
    for seed in (1, 2):
        runs[("sequential", seed)] = crafted("sequential", seed, seq, TASKS)
        runs[("fixed", seed)] = crafted("fixed", seed, better, TASKS)
        runs[("mssr", seed)] = crafted("mssr", seed, better, TASKS)
    summary = summarise(["sequential", "fixed", "mssr"], [1, 2], runs, n_resamples=50)
    found = {r.claim.text: r for r in summary.claims}
    assert set(found) == {"fixed > sequential", "mssr > fixed"}
    assert found["fixed > sequential"].verdict == "reproduced"
    assert found["fixed > sequential"].difference.mean == pytest.approx(25.0)
    assert found["mssr > fixed"].verdict == "unresolved"
    assert found["mssr > fixed"].difference.mean == pytest.approx(0.0)
    rows = [r for r in csv.DictReader(io.StringIO(csv_text(summary)))
            if r["kind"] == "paper_claim:MSSR"]
    assert [(r["method"], float(r["mean"]), r["significant"]) for r in rows] == [
        ("mssr > fixed", 0.0, "false"), ("fixed > sequential", 25.0, "true")]
    assert any("fixed > sequential +25.00" in line for line in summary_lines(summary))
    assert "| MSSR | fixed > sequential |" in markdown(summary, "t")


def test_seq_lora_without_its_mlp_is_read_from_sequential_and_said_so(tmp_path: Path) -> None:
    """ProCL's claims name `seq_lora`, which without the adapter MLP is `sequential`'s run: a
    bench that ran `sequential` (LoRA) judges them on its rows, and the claim says so. With the
    MLP, under full fine-tuning or without `sequential`, nothing stands in."""
    lora = load_config(None, ["model.finetune=lora"])
    assert stand_ins(["sequential", "procl"], lora, "sequential") == {"seq_lora": "sequential"}
    mlp = load_config(None, ["model.finetune=lora", "procl.adapter_mlp=true"])
    assert stand_ins(["sequential", "procl"], mlp, "sequential") == {}
    full = load_config(None, ["model.finetune=full"])
    assert stand_ins(["sequential", "procl"], full, "sequential") == {}
    assert stand_ins(["procl"], lora, "sequential") == {}
    assert stand_ins(["sequential", "seq_lora"], lora, "sequential") == {}  # its own rows

    seq = full_cells([[0, 0], [1, 0], [0, 1]])  # ap 50
    runs = {}
    for seed in (1, 2):
        runs[("sequential", seed)] = crafted("sequential", seed, seq, TASKS)
        runs[("procl", seed)] = crafted("procl", seed, full_cells([[0, 0], [1, 0], [0.5, 1]]),
                                        TASKS)  # ap 75
    folder = tmp_path / "seed1" / "sequential"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(dump_config(lora))
    runs[("sequential", 1)] = dataclasses.replace(runs[("sequential", 1)], dir=folder)
    summary = summarise(["sequential", "procl"], [1, 2], runs, n_resamples=50)
    found = {r.claim.text: r for r in summary.claims}
    assert set(found) == {"procl > seq_lora"}  # olora did not run: its claims are not shown
    result = found["procl > seq_lora"]
    assert result.difference.mean == pytest.approx(25.0) and result.verdict == "reproduced"
    assert result.text == "procl > seq_lora (seq_lora = sequential: the same run here)"
    assert f"| ProCL | {result.text} |" in markdown(summary, "t")
    without = summarise(["sequential", "procl"], [1, 2],
                        {**runs, ("sequential", 1): crafted("sequential", 1, seq, TASKS)}, 50)
    assert without.claims == []  # no readable setting: nothing is assumed


def test_a_bench_scored_both_ways_keeps_each_score_s_tables_in_files(tmp_path: Path) -> None:
    from retain.bench.report import write_bench_report
    from retain.bench.two_scores import by_score

    runs = {(m, s): _split_run(m, s, 10 * s + k) for k, m in enumerate(("sequential", "m"))
            for s in (1, 2)}
    summary = summarise(["sequential", "m"], [1, 2], runs, n_resamples=50)
    scored = by_score(["sequential", "m"], [1, 2], runs)
    assert set(scored) == {"generate", "loglik"}
    write_bench_report(summary, tmp_path, "t", scored)
    for score, by in scored.items():
        rows = {(r["method"], r["kind"], r["metric"]): float(r["mean"])
                for r in csv.DictReader((tmp_path / f"bench.{score}.csv").open())}
        assert rows[("m", "quality", "ap")] == pytest.approx(by.quality["m"]["ap"].mean)
        assert f"t, by {score}" in (tmp_path / f"bench.{score}.md").read_text()
    generate, loglik = (scored[s].quality["m"]["ap"].mean for s in ("generate", "loglik"))
    assert generate != pytest.approx(loglik)  # the two files hold different scores


def test_the_split_is_shown_only_where_generation_is_the_primary_score() -> None:
    from retain.bench.two_scores import by_score

    runs = {(m, s): _split_run(m, s, 10 * s + k) for k, m in enumerate(("sequential", "m"))
            for s in (1, 2)}
    scored = by_score(["sequential", "m"], [1, 2], runs)
    generate, loglik = scored["generate"].quality["m"], scored["loglik"].quality["m"]
    assert generate["bwt_format"] is not None
    assert loglik["bwt_format"] is None and loglik["bwt_knowledge"] is None
    assert "bwt: format" not in markdown(scored["loglik"], "t")
