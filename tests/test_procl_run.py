"""ProCL and O-LoRA through the whole loop: the adapters the loop writes after each task load
in plain PEFT and reproduce the model; composition with replay; a killed run resumes to the
bit-identical result (programs, router, keys, gates, W_orig and O-LoRA's frozen LoRAs are in
the checkpoint)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from retain.models.tiny import tiny_model_and_tokenizer
from retain.train.loop import ContinualTrainer, run
from tests.killing import step_records, whole_beside_crashed_and_resumed
from tests.test_engine import TINY, tiny_config


@pytest.mark.parametrize("method", ["procl", "olora"])
def test_saved_adapters_reload_in_plain_peft(tmp_path: Path, method: str) -> None:
    """adapters/task_<i>/ is a standard PEFT adapter: loaded without retain it gives the
    trained model's logits, and so does the merged model."""
    cfg = tiny_config(tmp_path, f"name={method}", f"methods=[{method}]", "data.num_tasks=3",
                      "train.steps_per_task=4")
    trainer = ContinualTrainer(cfg)
    try:
        trainer.run()
    finally:
        trainer.close()
    model = trainer.parts.inner_model().eval()
    ids = torch.randint(0, 256, (3, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        ours = model(input_ids=ids, attention_mask=mask).logits
        base = tiny_model_and_tokenizer()[0](input_ids=ids, attention_mask=mask).logits
        peft = PeftModel.from_pretrained(tiny_model_and_tokenizer()[0],
                                         str(cfg.run_dir / "adapters" / "task_3")).eval()
        loaded = peft(input_ids=ids, attention_mask=mask).logits
        merged = peft.merge_and_unload()(input_ids=ids, attention_mask=mask).logits
    assert not torch.allclose(ours, base, atol=1e-3)  # the adapter does something
    if method == "procl":
        assert torch.equal(loaded, ours)  # the very same LoRA factors and computation
    else:  # one concatenated LoRA instead of a sum of three: another summation order
        torch.testing.assert_close(loaded, ours, rtol=0, atol=1e-5)
    torch.testing.assert_close(merged, ours, rtol=0, atol=1e-5)
    if method == "olora":
        config = json.loads((cfg.run_dir / "adapters" / "task_3" / "adapter_config.json")
                            .read_text())
        assert (config["r"], config["lora_alpha"]) == (3 * 8, 3 * 16)  # ranks concatenated


@pytest.mark.parametrize("methods", ["mssr,procl", "mssr,olora"])
def test_adapter_methods_compose_with_replay(tmp_path: Path, methods: str) -> None:
    result = run(tiny_config(tmp_path, "name=mix", f"methods=[{methods}]", "data.num_tasks=3",
                             "train.steps_per_task=6"))
    assert result.metrics["cost"]["replayed_samples"] > 0
    steps = step_records(result.run_dir)
    if "olora" in methods:
        assert all({"task", "olora_orth", "olora_l2"} <= set(r["losses"]) for r in steps)
        assert any(r["losses"]["olora_orth"] > 0 for r in steps if r["task"] > 0)
    else:
        log = (result.run_dir / "log.jsonl").read_text()
        assert '"procl_task_start"' in log
    assert (result.run_dir / "adapters" / "task_3" / "adapter_model.safetensors").exists()


def _cli(out: Path, name: str, methods: str) -> list[str]:
    return [sys.executable, "-m", "retain", "run", "/dev/null", *TINY, f"output_dir={out}",
            f"name={name}", "train.checkpoint_every=2", "train.steps_per_task=8",
            f"methods=[{methods}]", "train.grad_accum=2", "data.num_tasks=3"]


@pytest.mark.parametrize("methods", ["procl", "olora", "mssr,procl_random_routing"])
def test_killed_run_resumes_to_the_same_result(tmp_path: Path, methods: str) -> None:
    """Crashed (in-process, tests/killing.py) in the middle of task 2, started again,
    compared with the uninterrupted run: scores, every task's adapter and the per-step losses
    bit-identical."""
    resumed = whole_beside_crashed_and_resumed(lambda name: _cli(tmp_path, name, methods)[3:],
                                               tmp_path)
    assert re.search(r"from task 2 step [2-6] \(train\)", resumed)  # mid task 2

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert (whole / "scores.csv").read_text() == (killed / "scores.csv").read_text()
    for t in range(1, 4):
        a = load_file(str(whole / "adapters" / f"task_{t}" / "adapter_model.safetensors"))
        b = load_file(str(killed / "adapters" / f"task_{t}" / "adapter_model.safetensors"))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (t, key)
    keys = ("step", "loss", "losses", "replayed")
    assert [[r[k] for k in keys] for r in step_records(whole)] == \
        [[r[k] for k in keys] for r in step_records(killed)]
    events = [[x for x in (d / "log.jsonl").read_text().splitlines() if '"procl_task' in x]
              for d in (whole, killed)]
    assert events[0] == events[1]
