"""Reports built from crafted run directories, in the layout the loop writes (no training)."""

import hashlib
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import numpy as np
import yaml

from retain.eval.matrix import ScoreMatrix
from retain.eval.metrics import compute_metrics, cost_summary
from retain.eval.seeds import noise_note
from retain.eval.uncertainty import BOOTSTRAP_METRICS, bootstrap_metrics
from retain.results.figures import named_losses
from retain.results.report import read_log, write_report
from retain.storage.examples import ExampleResults

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TASKS = ["boolq", "<b>sst2</b>", "gsm8k $x$ {"]
SCORES_A = [[10, 20, 30], [80, 25, 35], [60, 70, 40], [50, 65, 90]]
SCORES_B = [[10, 20, 30], [70, 20, 30], [30, 75, 30], [20, 40, 85]]
GIT_SHA = "0123456789abcdef0123456789abcdef01234567"


# ---- crafted run directories ----


def _examples(
    scores: list[list[float]], n: int, tasks: list[str], order_seed: int = 7
) -> ExampleResults:
    """Per-example 0/1 scores whose means are `scores`; the examples a stage gets right are
    the easiest ones of a fixed per-task ranking, so stages and runs are correlated as real
    ones are (which is what makes pairing pay)."""
    res = ExampleResults()
    rng = np.random.default_rng(order_seed)
    for i, task in enumerate(tasks):
        order = rng.permutation(n)
        ids = [f"{task}-{j}" for j in range(n)]
        for t, row in enumerate(scores):
            if not math.isfinite(row[i]):
                continue
            k = round(row[i] * n / 100)
            assert k * 100 / n == row[i], "crafted scores must be multiples of 100/n"
            hits = np.zeros(n)
            hits[order[:k]] = 1.0
            res.set(t, task, hits, ids=ids)
    for t in range(len(scores)):
        hits = np.zeros(50)
        hits[: 20 - t] = 1.0  # mmlu: 40, 38, 36, 34
        res.set(t, "mmlu", hits, ids=[f"mmlu-{j}" for j in range(50)])
    return res


def make_run(
    root: Path,
    name: str,
    scores: list[list[float]],
    *,
    n: int = 60,
    replay: bool = True,
    metrics: bool = True,
    examples: bool = True,
    ci: bool = True,
    seed: int = 42,
    methods: tuple[str, ...] = ("mssr",),
    tasks: list[str] | None = None,
    order_seed: int = 7,
) -> Path:
    """A run directory as the loop leaves it: scores.csv, metrics.json (point metrics, CIs,
    n per task, noise note, warnings, truncation, scoring, cost), examples.npz, log.jsonl,
    config.yaml and environment.json."""
    tasks = tasks or TASKS
    run = root / name
    run.mkdir(parents=True)
    m = ScoreMatrix(tasks, ["mmlu"])
    for t, row in enumerate(scores):
        m.set_row(t, dict(zip(tasks, row, strict=True)), {"mmlu": 40.0 - 2 * t})
    m.to_csv(run / "scores.csv")
    records = _log(tasks, replay)
    lines = [json.dumps(r) for r in records]
    (run / "log.jsonl").write_text("\n".join(lines) + '\n{"type": "st')  # torn last line
    res = _examples(scores, n, tasks, order_seed)
    if examples:
        res.save(run)
    if metrics:
        result = compute_metrics(ScoreMatrix.from_csv(run / "scores.csv"))
        result["cost"] = cost_summary(records)
        if ci:
            boot = bootstrap_metrics(res, tasks, ["mmlu"])
            result["ci"] = {k: boot[k] for k in BOOTSTRAP_METRICS}
            result["ap_per_stage_ci"] = boot["ap_per_stage"]
        counts = {t: n for t in tasks} | {"mmlu": 50}
        result["n_per_task"] = counts
        result["noise_note"] = noise_note({t: n for t in tasks})
        result["warnings"] = ["mssr replayed 3 samples only"]
        result["truncation"] = {tasks[0]: {"eval_prompts": 4, "train_prompts": 17}}
        result["scoring"] = {
            tasks[0]: {"score_type": "accuracy", "decoding": {"scoring": "loglik"},
                       "loglik_norm": "bytes"},
            tasks[2]: {"score_type": "exact_match",
                       "decoding": {"scoring": "greedy", "max_new_tokens": 64}},
        }  # fmt: skip
        (run / "metrics.json").write_text(json.dumps(result))
    config = {"name": name, "seed": seed, "methods": list(methods), "train": {"lr": 2e-4}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    env = {"python": "3.11.2", "versions": {"torch": "2.13.0", "retain": "0.1.0"},
           "git_sha": GIT_SHA, "device": "cpu", "cpu_count": 2}  # fmt: skip
    (run / "environment.json").write_text(json.dumps(env))
    return run


def _log(tasks: list[str], replay: bool) -> list[dict]:
    records: list[dict] = []
    step = 0
    for k, task in enumerate(tasks):
        records.append({"type": "eval", "stage": k, "seconds": 2.0})
        for _ in range(20):
            step += 1
            replayed = 2 if replay and k > 0 and step % 5 == 0 else 0
            losses = {"task": 2.0 / step**0.5}
            if replay:
                losses["replay"] = 0.1 * replayed
            records.append({"type": "step", "step": step, "task": k, "loss": sum(losses.values()),
                            "losses": losses, "tokens": 512, "samples": 8, "replayed": replayed,
                            "seconds": 0.5, "tokens_per_s": 1024.0, "lr": 1e-4})  # fmt: skip
            if replayed:
                records.append({"type": "replay_event", "step": step, "task": task, "size": 2})
        records.append({"type": "task_end", "task": task, "seconds": 10.0 + k,
                        "peak_memory_mb": 800.0 + k,
                        "counters": {"extra_forward_passes": 4 * k}})  # fmt: skip
    records.append({"type": "eval", "stage": len(tasks), "seconds": 2.0})
    return records


# ---- reading pages ----


class _Page(HTMLParser):
    """Images and table cells of a page: rows as lists of (text, class)."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.tables: list[list[list[tuple[str, str]]]] = []
        self._cell: list[str] | None = None
        self._cls = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src") or "")
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell, self._cls = [], a.get("class") or ""

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            text = "".join(self._cell).replace("\xa0", " ").strip()  # &nbsp; as a space
            self.tables[-1][-1].append((text, self._cls))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def parse(path: Path) -> _Page:
    p = _Page()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def table_with(page: _Page, header: str) -> list[list[tuple[str, str]]]:
    """The first table whose header row holds a cell starting with `header`."""
    for t in page.tables:
        if t and any(text.startswith(header) for text, _ in t[0]):
            return t
    raise AssertionError(f"no table with header {header!r}")


def row_of(t: list[list[tuple[str, str]]], first: str) -> list[tuple[str, str]]:
    for row in t:
        if row and row[0][0] == first:
            return row
    raise AssertionError(f"no row {first!r} in {[r[0][0] for r in t if r]}")


def assert_images_load(page_path: Path) -> list[Path]:
    """Every <img> of a page refers to an existing PNG next to it that decodes."""
    page = parse(page_path)
    assert page.images, "the page shows no figure"
    files = []
    for src in page.images:
        assert not re.match(r"^[a-z]+:", src) and not src.startswith("/"), src  # relative
        path = page_path.parent / src
        assert path.exists(), src
        assert path.read_bytes()[:8] == PNG_MAGIC
        img = matplotlib.image.imread(path)
        assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
        files.append(path)
    return files


def ap_of(scores: list[list[float]]) -> float:
    return sum(scores[-1]) / len(scores[-1])


# ---- single-run report ----


def test_read_log_skips_torn_lines(tmp_path):
    run = make_run(tmp_path, "a", SCORES_A)
    records = read_log(run / "log.jsonl")
    assert records[0] == {"type": "eval", "stage": 0, "seconds": 2.0}
    assert records[-1]["type"] == "eval"
    assert read_log(tmp_path / "missing.jsonl") == []


def test_a_report_without_figures_says_so_and_a_rerender_draws_them(tmp_path):
    """`eval.figures=false` (what a run passes) writes the tables only; `retain report`'s call
    later draws every figure into the same page."""
    run = make_run(tmp_path, "quiet", SCORES_A)
    text = write_report(run, figures=False).read_text()
    assert not list(run.glob("*.png")) and "<img" not in text
    assert "eval.figures=false" in text and "<h2>Score matrix</h2>" in text
    text = write_report(run).read_text()
    assert {p.name for p in run.glob("*.png")} >= {"score_matrix.png", "task_curves.png"}
    assert "eval.figures=false" not in text and "<img" in text


def test_write_report_sections(tmp_path):
    run = make_run(tmp_path, "mssr-run", SCORES_A)
    out = write_report(run)
    assert out == run / "report.html"
    text = out.read_text()
    pngs = {p.name for p in assert_images_load(out)}
    assert pngs == {"score_matrix.png", "task_curves.png", "ap_per_stage.png",
                    "loss_curves.png", "replay_events.png"}  # fmt: skip
    assert "&lt;b&gt;sst2&lt;/b&gt;" in text and "<b>sst2</b>" not in text  # escaped
    page = parse(out)
    metrics = json.loads((run / "metrics.json").read_text())
    mt = table_with(page, "metric")
    ap_row = row_of(mt, "ap")
    ci = metrics["ci"]["ap"]
    assert ap_row[1][0] == "↑" and row_of(mt, "forgetting_max")[1][0] == "↓"
    assert ap_row[2][0] == f"68.33 [{ci['low']:.2f}, {ci['high']:.2f}]"
    assert ci["low"] < 68.33 < ci["high"]
    assert row_of(mt, "bwt")[2][0].startswith("-17.50 [")
    # normalized_avg is a ratio in metrics.json and shown on the 0-100 scale, CI too; the
    # papers' plug-in is a point value only (biased at small n), its cross-fit has the CI
    assert row_of(mt, "normalized_avg (×100)")[2][0] == f"{100 * metrics['normalized_avg']:.2f}"
    na = metrics["ci"]["normalized_avg_xfit"]
    row = row_of(mt, "normalized_avg_xfit (×100)")
    assert row[2][0] == (
        f"{100 * na['value']:.2f} [{100 * na['low']:.2f}, {100 * na['high']:.2f}]"
    )
    assert "biased upward" in text and "conditional on this training seed" in text
    assert 1 < 100 * metrics["normalized_avg"] <= 100
    assert "T−1" in text  # definitions shown
    # per-task scoring, n and truncation
    tt = table_with(page, "name")
    assert tt[0][2][0] == "score type" and tt[0][3][0] == "decoding"
    boolq = row_of(tt, "boolq")
    assert boolq[2][0] == "accuracy" and boolq[3][0] == "scoring=loglik"
    header = [h for h, _ in tt[0]]
    assert boolq[header.index("loglik_norm")][0] == "bytes"
    assert boolq[header.index("test examples")][0] == "60"
    assert boolq[header.index("truncated eval prompts")][0] == "4"
    assert boolq[header.index("truncated train prompts")][0] == "17"
    gsm = row_of(tt, "gsm8k $x$ {")
    assert gsm[3][0] == "scoring=greedy, max_new_tokens=64"
    assert row_of(tt, "mmlu")[header.index("test examples")][0] == "50"
    # warnings, environment, git SHA, config, cost
    assert "Warning: mssr replayed 3 samples only" in text
    assert GIT_SHA in text and "versions.torch" in text and "2.13.0" in text
    assert "methods:" in text and "extra_forward_passes" in text
    assert "differences of a few points are noise" not in text  # 60 examples per task
    assert not list(run.glob(".*.tmp"))


def test_report_figures_are_not_duplicated(tmp_path):
    run = make_run(tmp_path, "r", SCORES_A)
    files = assert_images_load(write_report(run))
    digests = {hashlib.sha256(matplotlib.image.imread(p).tobytes()).hexdigest() for p in files}
    assert len(digests) == len(files)
    # the replay figure no longer repeats the loss panel: it is one panel, the loss figure two
    assert matplotlib.image.imread(run / "replay_events.png").shape[0] == 350
    assert matplotlib.image.imread(run / "loss_curves.png").shape[0] == 550
    # a run whose only named loss is the total loss gets no second, identical panel
    seq = make_run(tmp_path, "seq", SCORES_B, replay=False)
    write_report(seq)
    assert matplotlib.image.imread(seq / "loss_curves.png").shape[0] == 350
    assert not (seq / "replay_events.png").exists()
    assert named_losses([{"losses": {"task": 1.0}}]) == []


def test_report_says_small_test_sets_are_noise(tmp_path):
    run = make_run(tmp_path, "small", SCORES_A, n=20)
    text = write_report(run).read_text()
    assert "Small test sets." in text
    assert "one example moves a task score by 5.0 points" in text
    assert "differences of a few points are noise" in text
    # also when metrics.json is older and has no note: computed from examples.npz
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("noise_note", "n_per_task"):
        del metrics[key]
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert "differences of a few points are noise" in write_report(run).read_text()


def test_report_computes_intervals_from_examples_when_metrics_lack_them(tmp_path):
    run = make_run(tmp_path, "old", SCORES_A, ci=False)
    text = write_report(run).read_text()
    assert "computed now from examples.npz" in text
    boot = bootstrap_metrics(ExampleResults.load(run), TASKS, ["mmlu"], seed=42)  # the run's
    row = row_of(table_with(parse(run / "report.html"), "metric"), "la")
    assert (
        row[2][0] == f"{boot['la']['value']:.2f} [{boot['la']['low']:.2f}, "
        f"{boot['la']['high']:.2f}]"
    )
    assert boot["la"]["high"] > boot["la"]["low"]


def test_report_without_metrics_examples_or_replay(tmp_path):
    scores = [row[:] for row in SCORES_A[:3]] + [[float("nan")] * 3]
    run = make_run(tmp_path, "partial", scores, replay=False, metrics=False, examples=False)
    out = write_report(run)
    assert not (run / "replay_events.png").exists()
    assert_images_load(out)
    text = out.read_text()
    assert "Incomplete run" in text
    assert "No intervals: this run has no per-example results" in text
    assert row_of(table_with(parse(out), "metric"), "ap")[2][0] == "65.00"  # (60 + 70) / 2


def test_report_of_needed_cells_leaves_them_blank(tmp_path):
    nan = float("nan")
    scores = [[10, 20, 30], [80, 25, nan], [60, 70, 40], [50, 65, 90]]
    run = make_run(tmp_path, "needed", scores)
    assert ScoreMatrix.from_csv(run / "scores.csv").cells == "needed"
    out = write_report(run)
    assert_images_load(out)
    page = parse(out)
    stage1 = row_of(table_with(page, "stage"), "1 (after boolq)")
    assert [c for c, _ in stage1[1:4]] == ["80", "25", ""]
    text = out.read_text()
    assert "1 cell above the superdiagonal not evaluated (eval.cells=needed)" in text
    na = row_of(table_with(page, "metric"), "normalized_avg (×100)")
    assert "cells above the superdiagonal were not evaluated (eval.cells=needed)" in na[3][0]


def test_report_of_an_empty_run_dir(tmp_path):
    out = write_report(tmp_path)
    text = out.read_text()
    assert "No cost records" in text and "No metrics yet" in text
    assert "No environment.json" in text


def test_stage_curves_use_whiskers_when_bands_would_overlap():
    """A bench's seven methods get side-by-side whiskers; a few runs keep shaded bands."""
    from matplotlib.collections import PolyCollection

    from retain.results.figures import MAX_BANDS, stage_curves_figure

    def curves(n: int):
        ci = [{"low": 10.0, "high": 30.0}, {"low": 15.0, "high": 35.0}]
        return [(f"m{k}", [20.0, 25.0], ci) for k in range(n)]

    few = stage_curves_figure(curves(MAX_BANDS)).axes[0]
    assert sum(isinstance(c, PolyCollection) for c in few.collections) == MAX_BANDS
    many = stage_curves_figure(curves(7)).axes[0]
    assert not any(isinstance(c, PolyCollection) for c in many.collections)
    assert len(many.containers) == 7  # one errorbar per method
    xs = [line.get_xdata()[0] for line in many.lines if len(line.get_xdata()) == 2]
    assert len(set(xs)) == 7 and max(xs) - min(xs) < 0.5  # side by side around stage 1
