"""`retain bench`: planning, reuse and resumption, the aggregation over seeds and test examples,
gap_closed, and the written tables."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from retain.bench.aggregate import SeedRun, load_bench, summarise
from retain.bench.figures import cost_figure
from retain.bench.plan import base_config, plan_bench
from retain.bench.table import csv_text, estimate_text, markdown
from retain.cli import app
from retain.eval.matrix import ScoreMatrix
from retain.eval.paired_differences import paired_difference
from retain.eval.stats import t_quantile
from retain.eval.uncertainty import bootstrap_metrics, point_metrics
from retain.storage.examples import ExampleResults
from tests.killing import Crash, crash_at, run_cli
from tests.test_engine import TINY

runner = CliRunner()
FAST = [*TINY, "data.num_tasks=2", "train.steps_per_task=4", "replay.interval_units=0"]


# ---- crafted runs ----


def crafted(method: str, seed: int, cells: dict[tuple[int, int], list[float]], tasks: list[str]
            ) -> SeedRun:
    """A finished run whose cell (stage, task index) holds the given per-example scores."""
    examples = ExampleResults()
    matrix = ScoreMatrix(tasks)
    for (stage, i), scores in cells.items():
        ids = [f"{tasks[i]}-{k}" for k in range(len(scores))]  # as runs record them
        examples.set(stage, tasks[i], scores, ids=ids)
        matrix.R[stage, i] = 100.0 * float(np.mean(scores))
    metrics = point_metrics(examples, tasks)
    metrics["complete"] = True
    return SeedRun(method, seed, Path(f"/nowhere/{method}/{seed}"), tasks, [], examples, metrics,
                   matrix)


def full_cells(values: list[list[float]], n: int = 4) -> dict[tuple[int, int], list[float]]:
    """Every task scored at every stage, each cell's n examples all equal to its value."""
    return {(t, i): [v] * n for t, row in enumerate(values) for i, v in enumerate(row)}


TASKS = ["a", "b"]


def test_constant_examples_leave_the_seed_t_interval_only() -> None:
    # every example of a cell has the same score: resampling examples changes nothing
    runs = {}
    aps = {42: 0.4, 43: 0.6, 44: 0.8}
    for seed, x in aps.items():
        runs[("m", seed)] = crafted("m", seed, full_cells([[0, 0], [x, 0], [x, 1.0]]), TASKS)
    summary = summarise(["m"], list(aps), runs, n_resamples=200)
    ap = summary.quality["m"]["ap"]
    values = [100 * (x + 1.0) / 2 for x in aps.values()]
    mean = sum(values) / 3
    s = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    half = t_quantile(0.95, 2) * s / math.sqrt(3)
    assert ap.mean == pytest.approx(mean)
    assert (ap.low, ap.high) == (pytest.approx(mean - half), pytest.approx(mean + half))
    assert ap.n_seeds == 3


def test_one_seed_gives_the_run_s_own_bootstrap_interval() -> None:
    rng = np.random.default_rng(0)
    cells = {(t, i): list(rng.integers(0, 2, 30).astype(float)) for t in range(3)
             for i in range(2)}
    run = crafted("m", 42, cells, TASKS)
    summary = summarise(["m"], [42], {("m", 42): run}, n_resamples=500, seed=3)
    own = bootstrap_metrics(run.examples, TASKS, n_resamples=500, seed=3)
    ap = summary.quality["m"]["ap"]
    assert ap.mean == pytest.approx(own["ap"]["value"])
    assert (ap.low, ap.high) == (pytest.approx(own["ap"]["low"]), pytest.approx(own["ap"]["high"]))


def test_gap_closed_and_paired_differences_on_crafted_matrices() -> None:
    seq = crafted("sequential", 42, full_cells([[0, 0], [1, 0], [0, 1]]), TASKS)  # ap 50
    multi = crafted("multitask", 42, full_cells([[0, 0], [1, 1], [1, 1]]), TASKS)  # ap 100
    method = crafted("m", 42, full_cells([[0, 0], [1, 0], [0.5, 1]]), TASKS)  # ap 75
    flat = crafted("flat", 42, full_cells([[0, 0], [1, 0], [0, 1]]), TASKS)
    runs = {(r.method, 42): r for r in (seq, multi, method, flat)}
    summary = summarise(["sequential", "multitask", "m", "flat"], [42], runs, n_resamples=100)
    assert summary.quality["m"]["gap_closed"].mean == pytest.approx((75 - 50) / (100 - 50))
    assert summary.quality["flat"]["gap_closed"].mean == pytest.approx(0.0)
    assert summary.quality["sequential"]["gap_closed"] is None  # references define it
    diff = summary.differences["m"]["ap"]
    assert diff.mean == pytest.approx(25.0) and diff.significant  # constant examples: exact
    assert summary.differences["flat"]["ap"].significant is False
    # equal references: no gap to close
    same = {("sequential", 42): seq, ("multitask", 42): crafted("multitask", 42, full_cells(
        [[0, 0], [1, 0], [0, 1]]), TASKS), ("m", 42): method}
    equal = summarise(["sequential", "multitask", "m"], [42], same, 50)
    assert equal.quality["m"]["gap_closed"] is None
    assert any("no resolved gap" in note for note in equal.notes)
    assert not any("no resolved gap" in note for note in summary.notes)  # multitask +50, exact


def test_each_seed_s_difference_is_the_paired_difference_over_its_own_test_examples() -> None:
    """The per-seed table: method − sequential on one seed, with that seed's example interval
    (the interval a one-seed comparison gives), in the Markdown and the CSV; none for one seed."""
    rng = np.random.default_rng(1)

    def noisy(method: str, seed: int, p: float) -> SeedRun:
        cells = {(t, i): list((rng.random(60) < (p if t >= i + 1 else 0.1)).astype(float))
                 for t in range(3) for i in range(2)}
        return crafted(method, seed, cells, TASKS)

    runs = {(m, s): noisy(m, s, p) for s in (42, 43)
            for m, p in (("sequential", 0.5), ("m", 0.9 if s == 42 else 0.5))}
    summary = summarise(["sequential", "m"], [42, 43], runs, n_resamples=2000, seed=4)
    for s in (42, 43):
        est = summary.seed_differences["m"][s]["ap"]
        a, b = runs[("m", s)], runs[("sequential", s)]
        assert est.mean == pytest.approx(a.metrics["ap"] - b.metrics["ap"])
        own = paired_difference(a.examples, b.examples, TASKS, n_resamples=2000, seed=9)["ap"]
        assert est.high - est.low == pytest.approx(own["high"] - own["low"], rel=0.1)
        assert est.n_seeds == 1
    assert summary.seed_differences["m"][42]["ap"].significant  # about +40 points
    text, rows = markdown(summary, "t"), list(csv.DictReader(io.StringIO(csv_text(summary))))
    assert "Per seed: paired difference against sequential" in text
    assert "| m | " + estimate_text(summary.seed_differences["m"][42]["ap"], "ap", True) in text
    kinds = {(r["method"], r["kind"], r["metric"]) for r in rows}
    assert ("m", "difference_vs_sequential:seed43", "bwt") in kinds
    one = summarise(["sequential", "m"], [42], {k: v for k, v in runs.items() if k[1] == 42},
                    n_resamples=50)
    assert one.seed_differences == {} and "Per seed" not in markdown(one, "t")


def test_cost_figure_plots_ap_when_multitask_did_not_beat_sequential() -> None:
    seq = crafted("sequential", 42, full_cells([[0, 0], [1, 0], [0, 1]]), TASKS)  # ap 50
    good = crafted("multitask", 42, full_cells([[0, 0], [1, 1], [1, 1]]), TASKS)  # ap 100
    worse = crafted("multitask", 42, full_cells([[0, 0], [1, 0], [0, 0.75]]), TASKS)  # ap 37.5
    method = crafted("m", 42, full_cells([[0, 0], [1, 0], [0.5, 1]]), TASKS)
    labels, legends = {}, {}
    for name, multi in (("good", good), ("worse", worse)):
        runs = {(r.method, 42): r for r in (seq, multi, method)}
        for run in runs.values():
            run.metrics["cost"] = {"train_seconds": 10.0, "eval_seconds": 5.0}
        summary = summarise(["sequential", "multitask", "m"], [42], runs, n_resamples=50)
        axes = cost_figure(summary).axes[0]
        labels[name] = axes.get_ylabel()
        legends[name] = [t.get_text() for t in axes.get_legend().get_texts()]
        assert axes.get_xlabel().startswith("wall-clock")  # no CPU time in these runs
    assert labels["good"].startswith("gap_closed") and labels["worse"] == "ap"
    # each plotted method named once; the references have no gap_closed of their own
    assert legends == {"good": ["m"], "worse": ["sequential", "multitask", "m"]}
    for run in (seq, worse, method):
        run.metrics["cost"]["cpu_seconds"] = 12.0
    runs = {(r.method, 42): r for r in (seq, worse, method)}
    summary = summarise(["sequential", "multitask", "m"], [42], runs, n_resamples=50)
    assert cost_figure(summary).axes[0].get_xlabel().startswith("CPU seconds")


def test_general_share_is_read_from_the_counters_of_runs_that_predate_it() -> None:
    """GeRe's general rows are not replayed task rows; runs finished before `general_share`
    existed get it from their counters."""
    runs = {}
    for seed, rows in ((42, 2.0), (43, 4.0)):
        run = crafted("gere", seed, full_cells([[0, 0], [1, 0], [0, 1]]), TASKS)
        run.metrics["cost"] = {"train_samples": 16, "replayed_share": 0.0,
                               "counters": {"general_rows": rows}}
        runs[("gere", seed)] = run
    cost = summarise(["gere"], [42, 43], runs, n_resamples=10).cost["gere"]
    assert cost["general_share"].mean == pytest.approx((2 / 16 + 4 / 16) / 2)
    assert cost["replayed_share"].mean == 0.0


# ---- the command ----


def _bench(tmp_path: Path, *extra: str, methods: str = "fixed") -> list[str]:
    return ["bench", "builtin", "--methods", methods, *FAST, f"output_dir={tmp_path}",
            "name=b", *extra]


@pytest.mark.slow  # ten runs
def test_bench_reuses_finished_runs_and_reruns_only_what_a_change_affects(tmp_path: Path) -> None:
    first = runner.invoke(app, _bench(tmp_path, "--seeds", "2", methods="fixed,mssr"))
    assert first.exit_code == 0, first.output
    root = tmp_path / "b"
    dirs = {(m, s): root / f"seed{s}" / m for m in ("sequential", "multitask", "fixed", "mssr")
            for s in (42, 43)}
    assert all((d / "metrics.json").exists() for d in dirs.values())
    stamps = {k: (d / "metrics.json").stat().st_mtime_ns for k, d in dirs.items()}

    again = runner.invoke(app, _bench(tmp_path, "--seeds", "2", methods="fixed,mssr"))
    assert again.exit_code == 0, again.output
    assert again.output.count("finished earlier, reused") == 8
    assert stamps == {k: (d / "metrics.json").stat().st_mtime_ns for k, d in dirs.items()}

    changed = runner.invoke(app, _bench(tmp_path, "--seeds", "2", "mssr.k=5.0",
                                        methods="fixed,mssr"))
    assert changed.exit_code == 0, changed.output
    assert changed.output.count("configuration changed (mssr.k: 10.0 → 5.0)") == 2
    for key, d in dirs.items():
        moved = (d / "metrics.json").stat().st_mtime_ns != stamps[key]
        assert moved == (key[0] == "mssr"), key

    # the table's numbers are the runs' own metrics, recomputed from their per-example results
    methods, seeds, runs = load_bench(root)
    assert methods == ["sequential", "multitask", "fixed", "mssr"] and seeds == [42, 43]
    rows = list(csv.DictReader((root / "bench.csv").open()))
    for method in methods:
        per_seed = []
        for seed in seeds:
            run_dir = dirs[(method, seed)]
            tasks = ScoreMatrix.from_csv(run_dir / "scores.csv").tasks
            recomputed = point_metrics(ExampleResults.load(run_dir), tasks)
            stored = json.loads((run_dir / "metrics.json").read_text())
            assert recomputed["ap"] == pytest.approx(stored["ap"])
            per_seed.append(recomputed["ap"])
        row = next(r for r in rows if (r["method"], r["kind"], r["metric"]) ==
                   (method, "quality", "ap"))
        assert float(row["mean"]) == pytest.approx(sum(per_seed) / 2)
        assert float(row["low"]) <= float(row["mean"]) <= float(row["high"])
    assert "| mssr |" in (root / "bench.md").read_text()
    for png in ("bench_matrices.png", "bench_ap_per_stage.png", "bench_forgetting.png",
                "bench_cost.png"):
        assert (root / png).stat().st_size > 0
    rendered = runner.invoke(app, ["report", str(root)])
    assert rendered.exit_code == 0 and "bench.html" in rendered.output


def test_conflicting_combinations_are_rejected_before_any_run(tmp_path: Path) -> None:
    for combo, words in (("fixed+mssr", "alternative replay methods"),
                         ("procl+olora", "both replace the model's adapter layers"),
                         ("sequential+mssr", "plain fine-tuning with no method"),
                         ("multitask+gere", "multitask is a reference run")):
        result = runner.invoke(app, _bench(tmp_path, methods=f"mssr,{combo}"))
        assert result.exit_code == 2, result.output
        assert words in result.output and f"method {combo}" in result.output
    assert not (tmp_path / "b").exists()


def test_a_bench_target_is_a_stream_name_a_stream_file_or_a_run_config(tmp_path: Path) -> None:
    assert base_config("builtin", [])["data"]["stream"] == "builtin"
    stream = tmp_path / "mine.yaml"
    stream.write_text("tasks: []\n")
    assert base_config(str(stream), [])["data"]["stream"] == str(stream)
    assert base_config(str(stream), [])["name"] == "mine"
    run = tmp_path / "run.yaml"
    run.write_text("name: r1\ntrain: {lr: 0.01}\n")
    assert base_config(str(run), [])["train"]["lr"] == 0.01
    with pytest.raises(ValueError, match="neither a file nor a registered stream"):
        base_config("no-such-stream", [])
    plan = plan_bench(base_config("builtin", [f"output_dir={tmp_path}"]), ["mssr"], 3)
    assert [(r.method, r.seed) for r in plan.runs][:3] == [
        ("sequential", 42), ("multitask", 42), ("mssr", 42)]
    assert plan.run("mssr", 44).run_dir == tmp_path / "builtin" / "seed44" / "mssr"


def test_two_bench_processes_sharing_a_folder_keep_each_others_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second writer of the manifest waits for the first one's read-merge-write, so the
    manifest lists both plans' runs (before, the slower writer dropped the other's)."""
    import threading

    from retain.bench import plan as plan_module
    from retain.bench.runner import record_in_manifest

    base = base_config("builtin", [f"output_dir={tmp_path}"])
    first, second = (plan_bench({**base, "seed": s}, ["mssr"], 1, references=False)
                     for s in (42, 43))
    record_in_manifest(plan_bench(base, ["fixed"], 1, references=False))  # a manifest exists
    inside, release = threading.Event(), threading.Event()
    real_read = plan_module.read_manifest

    def slow_read(root: Path) -> dict:
        data = real_read(root)
        if threading.current_thread().name == "first":
            inside.set()
            release.wait(10)
        return data

    monkeypatch.setattr(plan_module, "read_manifest", slow_read)
    a = threading.Thread(target=record_in_manifest, args=(first,), name="first")
    a.start()
    assert inside.wait(10)
    b = threading.Thread(target=record_in_manifest, args=(second,), name="second")
    b.start()
    b.join(0.5)
    blocked = b.is_alive()
    release.set()
    a.join(10)
    b.join(10)
    assert blocked  # it waited for the first writer
    runs = {(r["method"], r["seed"]) for r in plan_module.read_manifest(first.root)["runs"]}
    assert runs == {("fixed", 42), ("mssr", 42), ("mssr", 43)}


def test_an_interrupted_bench_resumes_its_run(tmp_path: Path) -> None:
    """The bench dies in mid task 2 (after step 4, the checkpoint of step 2 written) and the
    same command resumes its run."""
    args = _bench(tmp_path, "--no-references", "train.checkpoint_every=2",
                  "train.steps_per_task=8")
    run_dir = tmp_path / "b" / "seed42" / "fixed"
    with crash_at(task=1, step=4), pytest.raises(Crash):
        run_cli(args)
    assert (run_dir / "checkpoints" / "latest").exists()
    assert not (run_dir / "metrics.json").exists()
    assert "fixed (seed 42): resuming" in run_cli(args)
    assert (run_dir / "metrics.json").exists()


def test_a_dry_run_says_what_each_run_would_do_and_runs_nothing(tmp_path: Path) -> None:
    """`--dry-run`: each run's state (not started, finished, where it resumes) and the training
    left, timed by the finished runs; nothing is written."""
    args = _bench(tmp_path, "--no-references", "train.checkpoint_every=2",
                  "train.steps_per_task=8", methods="sequential,fixed")
    before = run_cli([*args, "--dry-run"])
    assert "sequential (seed 42): not started" in before
    assert "left: 2.00 runs' worth of training (no finished run to time it)" in before
    assert not (tmp_path / "b").exists()
    run_cli(_bench(tmp_path, "--no-references", "train.checkpoint_every=2",
                   "train.steps_per_task=8", methods="sequential"))
    with crash_at(task=1, step=4), pytest.raises(Crash):  # fixed dies in task 2, saved at 2
        run_cli(args)
    after = run_cli([*args, "--dry-run"])
    assert "sequential (seed 42): finished" in after
    assert "fixed (seed 42): resumes task 2 at step 2" in after
    cpu = json.loads((tmp_path / "b" / "seed42" / "sequential" / "metrics.json").read_text())[
        "cost"]["cpu_seconds"]
    left = 1 - (1 + 2 / 8) / 2  # fixed trained task 1 and 2 of task 2's 8 steps
    assert f"left: {left:.2f} runs' worth of training, about {left * cpu / 3600:.1f}" in after
    assert "CPU s a run (the mean of 1 finished)" in after
    other_seed = run_cli([*_bench(tmp_path, "--no-references", "train.steps_per_task=8",
                                  "seed=43", methods="sequential"), "--dry-run"])
    assert "sequential (seed 43): not started" in other_seed
    assert "(the mean of 1 finished)" in other_seed  # timed by the bench's seed-42 run
    assert "resuming" in run_cli(args)  # the dry runs left the checkpoint as it was


def test_a_dry_run_names_a_checkpoint_it_cannot_read(tmp_path: Path) -> None:
    from retain.bench.status import checkpoint_share

    run = plan_bench(base_config("builtin", [f"output_dir={tmp_path}"]), ["fixed"], 1,
                     references=False).runs[0]
    state = run.run_dir / "checkpoints" / "latest" / "state.json"
    state.parent.mkdir(parents=True)
    state.write_text("{not json")
    done, where = checkpoint_share(run)
    assert done == 0.0 and str(state) in where and "cannot be read" in where


def test_a_second_invocation_adds_its_runs_to_the_bench(tmp_path: Path) -> None:
    assert runner.invoke(app, _bench(tmp_path, "--no-references", methods="sequential")
                         ).exit_code == 0
    result = runner.invoke(app, _bench(tmp_path, "--no-references", "--seeds", "2",
                                       methods="fixed"))
    assert result.exit_code == 0, result.output
    methods, seeds, runs = load_bench(tmp_path / "b")
    assert methods == ["sequential", "fixed"] and seeds == [42, 43]
    assert sorted(runs) == [("fixed", 42), ("fixed", 43), ("sequential", 42)]
    assert "fixed" in json.loads((tmp_path / "b" / "bench.json").read_text())["methods"]


def test_benches_on_the_same_test_examples_compare_and_others_are_refused(tmp_path: Path) -> None:
    for name, method in (("one", "fixed"), ("two", "fixed")):
        args = ["bench", "builtin", "--methods", method, "--no-references", *FAST,
                f"output_dir={tmp_path}", f"name={name}"]
        assert runner.invoke(app, args).exit_code == 0
    out = tmp_path / "both"
    result = runner.invoke(app, ["report", str(tmp_path / "one"), str(tmp_path / "two"),
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = (out / "bench.md").read_text()
    assert "| fixed |" in table and "| fixed@two |" in table
    other = ["bench", "builtin", "--methods", "fixed", "--no-references", *FAST,
             f"output_dir={tmp_path}", "name=three", "data.max_test_per_task=3"]
    assert runner.invoke(app, other).exit_code == 0
    refused = runner.invoke(app, ["report", str(tmp_path / "one"), str(tmp_path / "three"),
                                  "--out", str(out)])
    assert refused.exit_code == 2 and "same stream and test examples" in refused.output
