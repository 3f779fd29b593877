"""Shared fixtures: finished tiny runs built once per test session (once per xdist worker) and
copied into each test's own folder, so that tests which only read or resume a finished run do
not each train one."""

from __future__ import annotations

import copy
import gc
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from retain.train.loop import RunResult
from tests.torchrun_batch import _torchrun_launch, torchrun_runs  # noqa: F401  (one launch)

FinishedRun = Callable[..., RunResult]


@pytest.fixture(scope="session")
def _built_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, ...], RunResult]:
    """Tiny runs finished so far in this session, keyed by their overrides; never handed out
    (tests get copies: they may damage or resume them)."""
    return {}


@pytest.fixture
def finished_run(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    _built_runs: dict[tuple[str, ...], RunResult],
) -> FinishedRun:
    """`finished_run(*overrides, name="r")`: a copy, at `tmp_path / name`, of the finished run of
    `tests.test_engine.tiny_config(..., *overrides)`; the same config with
    `output_dir=tmp_path` and `name=<name>` resumes it (name and output_dir are result-neutral)."""
    from retain.train.loop import run
    from tests.test_engine import tiny_config

    def make(*overrides: str, name: str = "r") -> RunResult:
        key = tuple(overrides)
        if key not in _built_runs:
            root = tmp_path_factory.mktemp("finished")
            _built_runs[key] = run(tiny_config(root, "name=built", *overrides))
        built = _built_runs[key]
        dest = tmp_path / name
        shutil.copytree(built.run_dir, dest)
        return RunResult(dest, copy.deepcopy(built.metrics), built.resumed)

    return make


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `slow` first: under xdist's worksteal the longest start early and the short
    ones fill the workers' last minutes, instead of one worker finishing a torchrun test alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Every module the tests import is loaded now: move those objects out of the collector's
    reach (`gc.freeze`). Each run's `reset_peak_memory` collects garbage, and a full collection
    over torch's, transformers' and the tests' ~400k module-level objects costs ~0.2 s of CPU:
    ~40 s over the suite's runs. Objects created later are collected as usual."""
    gc.collect()
    gc.freeze()
