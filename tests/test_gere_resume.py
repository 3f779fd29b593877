"""A GeRe run killed (crashed in-process) in the middle of task 2 resumes to exactly the result
of an uninterrupted run: scores, adapter or model weights, per-step losses and the logged
auxiliary losses."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.killing import whole_beside_crashed_and_resumed

TINY = [
    "model.name_or_path=tiny-random", "eval.figures=false",
    "model.lora.target_modules=[q_proj,v_proj]",
    "data.stream=builtin", "data.max_train_per_task=24", "data.max_test_per_task=4",
    "data.max_length=128", "data.valid_per_task=4", "data.num_tasks=3", "train.batch_size=4",
    "train.lr=5e-3", "train.progress=false", "eval.batch_size=8", "train.checkpoint_every=2",
    "train.steps_per_task=8", "general.size=10", "general.max_tokens=40",
]

SETTINGS = {
    "tm_per_batch_self": ["methods=[gere]", "general.source=self", "general.mixing=per_batch",
                          "general.per_batch_rows=2", "general.weight=dy"],
    "tm_concat_mmap": ["methods=[gere]", "general.cache=mmap"],
    "l2_full_cache": ["methods=[gere_l2]", "model.finetune=full", "general.mixing=per_batch"],
    "mssr_gere": ["methods=[mssr,gere]", "mssr.first_interval_units=0.5"],
}


def _source(folder: Path) -> Path:
    path = folder / "general.jsonl"
    if not path.exists():
        text = [f"Entry {i}: a {'long ' * (i % 4)}road leads from the valley to the coast."
                for i in range(16)]
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in text))
    return path


def _cli(parent: Path, name: str, setting: str) -> list[str]:
    source = [] if "general.source=self" in SETTINGS[setting] else [
        f"general.source={_source(parent)}"]
    return [sys.executable, "-m", "retain", "run", "/dev/null", *TINY, *source,
            f"output_dir={parent}", f"name={name}", *SETTINGS[setting]]


def _records(run_dir: Path, *kinds: str) -> list[dict]:
    path = run_dir / "log.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip() and any(f'"type": "{k}"' in line for k in kinds):
            out.append(json.loads(line))
    return out


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    folder = run_dir / "adapters" / "task_3"
    name = "adapter_model.safetensors" if (folder / "adapter_model.safetensors").exists() \
        else "model.safetensors"
    return load_file(str(folder / name))


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_killed_gere_run_resumes_to_the_same_result(tmp_path: Path, setting: str) -> None:
    """Crashed in this process (tests/killing.py) in mid task 2 and started again."""
    resumed = whole_beside_crashed_and_resumed(lambda name: _cli(tmp_path, name, setting)[3:],
                                               tmp_path)
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    assert (killed / "checkpoints" / "latest").exists()
    assert "resuming" in resumed

    assert (whole / "scores.csv").read_text() == (killed / "scores.csv").read_text()
    a, b = _weights(whole), _weights(killed)
    assert a.keys() == b.keys() and a
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    steps = [(r["step"], r["loss"], r["losses"], r.get("general")) for r in _records(whole, "step")]
    assert steps == [(r["step"], r["loss"], r["losses"], r.get("general"))
                     for r in _records(killed, "step")]
    assert sum(s[3] or 0 for s in steps) > 0, "the run must replay general rows"
    kinds = ("general_replay", "general_replay_first_step", "replay_event")
    assert _records(whole, *kinds) == _records(killed, *kinds)
    assert _records(whole, "general_replay"), "the auxiliary loss is logged"
