"""`retain size`: the planner's variance algebra by hand, its components read from synthetic
pilot benches whose components are known, and the command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from retain.bench.aggregate import summarise
from retain.bench.sizing import Components, pilot_components, power, smallest_n
from retain.cli import app
from retain.eval.stats import t_pvalue, t_quantile
from tests.test_bench import TASKS, crafted, full_cells
from tests.test_report import SCORES_A, SCORES_B, make_run


def test_variance_df_and_power_by_hand() -> None:
    c = Components(seed=4.0, example=60.0, interaction=120.0, tasks=5)
    assert c.variance(3, 30) == pytest.approx(4 / 3 + 2 + 120 / 90)
    spread, example = (4 + 120 / 30) / 3, 60 / 30
    df = (spread + example) ** 2 / (spread**2 / 2 + example**2 / (5 * 28))
    assert c.df(3, 30) == pytest.approx(df)
    se = math.sqrt(c.variance(3, 30))
    x = t_quantile(0.99, df) - 3.0 / se
    want = 0.5 * t_pvalue(x, df) if x >= 0 else 1 - 0.5 * t_pvalue(x, df)
    assert power(c, 3, 30, 3.0, 0.01) == pytest.approx(want)
    assert power(c, 3, 300, 3.0, 0.01) < power(c, 6, 300, 3.0, 0.01)
    # more examples at 3 seeds can lower the power: the seed spread takes over and its 2 df
    # make the critical value large
    assert power(c, 3, 300, 3.0, 0.01) < power(c, 3, 30, 3.0, 0.01)


def test_smallest_n_reaches_the_target_and_no_fewer_does() -> None:
    c = Components(seed=0.5, example=40.0, interaction=200.0, tasks=5)
    n = smallest_n(c, 4, 3.0, 0.01)
    assert n is not None and power(c, 4, n, 3.0, 0.01) >= 0.8
    assert power(c, 4, n - 1, 3.0, 0.01) < 0.8
    # a seed variance that k seeds cannot average away: no test set is large enough
    assert smallest_n(Components(50.0, 1.0, 1.0, 5), 2, 3.0, 0.01) is None


def test_pilot_with_constant_examples_has_only_a_seed_component() -> None:
    """Every example of a cell scores alike: the per-seed differences vary, the draws do not,
    so the pilot's components are (S² of the differences, 0, 0) exactly."""
    runs = {}
    for seed, x in ((42, 0.5), (43, 0.75), (44, 1.0)):
        runs[("sequential", seed)] = crafted("sequential", seed, full_cells(
            [[0, 0], [1, 0], [0.5, 1]]), TASKS)  # fmt: skip
        runs[("m", seed)] = crafted("m", seed, full_cells([[0, 0], [1, 0], [x, 1]]), TASKS)
    summary = summarise(["sequential", "m"], [42, 43, 44], runs, n_resamples=100)
    comps, n0, _ = pilot_components(summary)
    diffs = [0.0, 12.5, 25.0]  # ap of m − sequential per seed, in points
    assert n0 == 4
    assert comps.seed == pytest.approx(np.var(diffs, ddof=1))
    assert comps.example == 0.0 and comps.interaction == 0.0


def test_pilot_with_identical_seeds_has_only_an_example_component() -> None:
    """The same answers at every seed: no seed or interaction variance; the example component
    is the variance of the paired ap difference over test examples."""
    rng = np.random.default_rng(3)
    n, runs = 40, {}
    cells = {(t, i): rng.integers(0, 2, n).astype(float) for t in range(3) for i in range(2)}
    other = {k: rng.integers(0, 2, n).astype(float) for k in cells}
    for seed in (42, 43):
        runs[("sequential", seed)] = crafted("sequential", seed, cells, TASKS)
        runs[("m", seed)] = crafted("m", seed, other, TASKS)
    summary = summarise(["sequential", "m"], [42, 43], runs, n_resamples=4000, seed=1)
    comps, n0, _ = pilot_components(summary)
    assert n0 == n and comps.seed == 0.0 and comps.interaction == pytest.approx(0.0, abs=1e-9)
    # ap = mean of the 2 tasks' final scores: Var = (1/4) Σ_i Var(d̄_i), d = 100 (m − seq)
    d = [100.0 * (other[(2, i)] - cells[(2, i)]) for i in range(2)]
    halves = [np.var(x[h::2], ddof=1) / len(x[h::2]) / 4 for x in d for h in (0, 1)]
    want = sum(halves) / 4 * n  # stratified by half: each half is a quarter of the mean's var
    assert comps.example == pytest.approx(want, rel=0.1)


def _pilot(root: Path, seeds: tuple[int, ...], other: str = "m") -> Path:
    runs = []
    for seed in seeds:
        for name, scores in (("sequential", SCORES_B), (other, SCORES_A)):
            make_run(root / f"seed{seed}", name, scores, seed=seed, order_seed=seed + len(name))
            runs.append({"method": name, "seed": seed, "dir": f"seed{seed}/{name}"})
    manifest = {"name": "pilot", "methods": ["sequential", other], "seeds": list(seeds),
                "runs": runs}  # fmt: skip
    (root / "bench.json").write_text(json.dumps(manifest))
    return root


def test_size_command(tmp_path: Path) -> None:
    root = _pilot(tmp_path / "pilot", (42, 43))
    out = CliRunner().invoke(app, ["size", str(root), "--delta", "3"])
    assert out.exit_code == 0, out.output
    assert "2 seeds, 3 tasks × 60 test examples, 1 method(s)" in out.output
    assert "Holm level 0.05 (0.05 / 1 methods)" in out.output
    assert "examples/task" in out.output and "wall hours" in out.output
    one = _pilot(tmp_path / "one", (42,))
    bad = CliRunner().invoke(app, ["size", str(one), "--delta", "3"])
    assert bad.exit_code == 2 and "≥ 2 seeds" in bad.output
    assert CliRunner().invoke(app, ["size", str(root), "--delta", "0"]).exit_code == 2


def test_a_pilot_of_the_references_alone_sizes_a_planned_bench(tmp_path: Path) -> None:
    """The usual first pilot of a stream runs sequential and multitask only: multitask's
    difference stands in for a method's, and --methods sets Holm's m and the runs planned."""
    root = _pilot(tmp_path / "refs", (42, 43), other="multitask")
    out = CliRunner().invoke(app, ["size", str(root), "--delta", "3", "--methods", "9"])
    assert out.exit_code == 0, out.output
    assert "9 method(s) against sequential (planned)" in out.output
    assert "from multitask − sequential" in out.output
    assert "Holm level 0.00556 (0.05 / 9 methods)" in out.output
    rows = {r[0]: r for line in out.output.splitlines() if (r := line.split()) and r[0].isdigit()}
    assert rows["3"][3] == "33" and rows["10"][3] == "110"  # (9 methods + 2 references) × k
    mine = CliRunner().invoke(app, ["size", str(_pilot(tmp_path / "m", (42, 43))), "--delta",
                                    "3"])  # fmt: skip
    assert "from m − sequential" in mine.output and "(planned)" not in mine.output
