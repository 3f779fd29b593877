"""One pair of runs, one interval: `retain bench`, `retain report A B` and the summary that
`retain run` / `retain demo` print all get the paired difference from `eval/stats.py`."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from retain.bench.report import render_bench
from retain.results.report import compare_runs
from retain.results.summary import summary_lines
from tests.test_report import SCORES_A, SCORES_B, make_run


def _bench(tmp_path: Path) -> tuple[Path, Path, Path]:
    root = tmp_path / "bench"
    seed_dir = root / "seed42"
    seq = make_run(seed_dir, "sequential", SCORES_B, methods=("sequential",), order_seed=7)
    m = make_run(seed_dir, "m", SCORES_A, order_seed=8)
    manifest = {"name": "bench", "methods": ["sequential", "m"], "seeds": [42], "runs": [
        {"method": "sequential", "seed": 42, "dir": "seed42/sequential"},
        {"method": "m", "seed": 42, "dir": "seed42/m"}]}  # fmt: skip
    (root / "bench.json").write_text(json.dumps(manifest))
    return root, seq, m


def test_bench_and_report_a_b_print_the_same_interval(tmp_path: Path) -> None:
    root, seq, m = _bench(tmp_path)
    render_bench(root)
    bench = next(r for r in csv.DictReader((root / "bench.csv").open())
                 if (r["method"], r["kind"], r["metric"]) == ("m", "difference_vs_sequential",
                                                              "ap"))  # fmt: skip
    compare_runs([seq, m], tmp_path / "cmp")
    report = next(r for r in csv.DictReader((tmp_path / "cmp" / "comparison.csv").open())
                  if (r["metric"], r["run"]) == ("ap", "m"))
    got_bench = tuple(float(bench[k]) for k in ("mean", "low", "high"))
    got_report = tuple(float(report[k]) for k in ("diff_vs_baseline", "diff_low", "diff_high"))
    assert got_bench == got_report
    assert got_bench[1] < got_bench[0] < got_bench[2]
    # the printed summary of `retain run` / `retain demo` rounds the very same numbers
    rows = [(name, json.loads((d / "metrics.json").read_text())) for name, d in
            (("sequential", seq), ("m", m))]
    text = "\n".join(summary_lines(rows, [seq, m]))
    shown = re.search(r"m: ap ([+-][\d.]+) \[([+-][\d.]+),([+-][\d.]+)\]", text)
    assert shown is not None, text
    assert shown.groups() == (f"{got_bench[0]:+.2f}", f"{got_bench[1]:+.1f}",
                              f"{got_bench[2]:+.1f}")  # fmt: skip
    # and every table says what a one-seed interval covers
    assert "conditional on this training seed" in (root / "bench.md").read_text()
    assert "over seeds and" not in (root / "bench.md").read_text()
    assert "conditional on" in (tmp_path / "cmp" / "comparison.md").read_text()
