"""A fast run of `benchmarks/interval_coverage.py`: the library's intervals cover in simulated
benches and the papers' plug-in forgetting does not (loose bounds, a few hundred replicates;
the full run with 2,000 per setting is in docs/results.md)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "interval_coverage.py"


@pytest.fixture(scope="module")
def sim():
    spec = importlib.util.spec_from_file_location("interval_coverage", PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["interval_coverage"] = module
    spec.loader.exec_module(module)
    return module


def test_one_seed_small_tasks_cover_and_the_plugin_does_not(sim) -> None:
    r = sim.run_setting(sim.Setting(15, 8, 1, 3.5), reps=250, n_draws=100, seed=1)
    for name in sim.METRICS:
        assert 0.88 <= r[f"new_{name}"] <= 1.0, (name, r)
    assert r["old_forgetting"] < 0.6  # the papers' plug-in with its percentile interval
    assert r["new_fp"] <= 0.13


def test_three_seeds_with_a_seed_effect_cover(sim) -> None:
    r = sim.run_setting(sim.Setting(5, 24, 3, 3.5), reps=200, n_draws=100, seed=2)
    for name in sim.METRICS:
        assert 0.88 <= r[f"new_{name}"] <= 1.0, (name, r)
    assert r["new_fp"] <= 0.13
    assert {"c_seed", "c_ex", "c_sx"} <= set(r)
