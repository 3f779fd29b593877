"""Each run reports its own peak memory, not the largest peak of the runs before it in the same
process (`retain bench` runs them one after another in one process; on CPU the peak was the
process's `ru_maxrss`, which only ever grows)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from retain.train.devices import peak_memory_mb, reset_peak_memory
from retain.train.loop import run
from tests.test_engine import tiny_config

CPU = torch.device("cpu")
BIG_MB = 600


def raise_the_peak() -> float:
    """Touch BIG_MB of fresh memory, free it, and return the peak it left behind."""
    block = np.ones(BIG_MB * 2**20 // 8)
    block[::512] += 1.0
    del block
    return peak_memory_mb(CPU)


def test_reset_starts_a_new_peak() -> None:
    before = raise_the_peak()
    if not reset_peak_memory(CPU):
        pytest.skip("this system cannot reset the peak RSS (/proc/self/clear_refs)")
    assert peak_memory_mb(CPU) < before - BIG_MB / 2


def test_a_run_after_a_bigger_one_reports_its_own_peak(tmp_path: Path) -> None:
    earlier = raise_the_peak()  # stands for an earlier run of the same bench process
    result = run(tiny_config(tmp_path, "name=after", "data.num_tasks=1", "train.steps_per_task=2"))
    ends = [r for r in map(json.loads, (result.run_dir / "log.jsonl").read_text().splitlines())
            if r["type"] == "task_end"]
    assert ends and all(r["peak_memory_scope"] == "run" for r in ends)
    assert all(r["peak_memory_mb"] < earlier - BIG_MB / 2 for r in ends)
    assert result.metrics["cost"]["peak_memory_mb"] < earlier - BIG_MB / 2
