"""Shared set-up of the Hugging Face Trainer integration tests: the same tiny run through
`retain run` and through a plain `transformers.Trainer` with `retain.integrations.hf`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import Trainer, TrainingArguments

from retain.config import load_config
from retain.integrations.hf import Continual
from retain.models.tiny import tiny_model_and_tokenizer
from retain.train.loop import RunResult, run

REPO = Path(__file__).resolve().parents[1]

SETTINGS = [
    "model.name_or_path=tiny-random", "eval.figures=false",
    "model.lora.target_modules=[q_proj,v_proj]",
    f"data.stream={REPO / 'examples' / 'stream.yaml'}",
    "data.num_tasks=2",  # parity (its own budget: 12 steps, lr 1e-3; option scoring), box_colour
    "data.max_train_per_task=16",
    "data.max_test_per_task=8",
    "data.valid_per_task=4",
    "data.max_length=128",
    "train.batch_size=2",
    "train.lr=5e-3",
    "train.steps_per_task=3",
    "train.warmup_ratio=0.2",
    "train.progress=false",
    "replay.interval_units=0",  # replay in every step, so that replay is exercised
    "replay.lam=0.5",
    "eval.batch_size=8",
]


def hf_args(out: Path, accum: int = 1, **extra: Any) -> TrainingArguments:
    """TrainingArguments matched to SETTINGS: AdamW as `retain run` builds it, cosine schedule
    with retain's warm-up ratio, clipping at 1, no checkpoints unless asked."""
    values: dict[str, Any] = dict(
        output_dir=str(out),
        per_device_train_batch_size=2,
        gradient_accumulation_steps=accum,
        learning_rate=5e-3,
        lr_scheduler_type="cosine",
        warmup_steps=0.2,
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch",
        save_strategy="no",
        report_to=[],
        logging_steps=1,
        use_cpu=True,
        disable_tqdm=True,
        seed=42,
    )
    values.update(extra)
    return TrainingArguments(**values)


def retain_run(tmp: Path, method: str, accum: int = 1, *extra: str) -> RunResult:
    cfg = load_config(
        None,
        [*SETTINGS, f"methods=[{method}]", f"train.grad_accum={accum}", *extra,
         f"output_dir={tmp}", "name=cli"],
    )
    return run(cfg)


def trainer_run(
    tmp: Path, method: str, accum: int = 1, *extra: str, trainer_cls: type = Trainer, **args: Any
) -> RunResult:
    model, tokenizer = tiny_model_and_tokenizer()
    trainer = trainer_cls(
        model=model, args=hf_args(tmp / "hf", accum, **args), processing_class=tokenizer
    )
    cl = Continual(trainer, None, [*SETTINGS, f"methods=[{method}]", *extra,
                                   f"output_dir={tmp}", "name=trainer"])
    return cl.train()


def step_records(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == "step"]


def adapter_difference(a: Path, b: Path, tasks: int = 2) -> float:
    """The largest absolute difference between the two runs' exported adapter weights."""
    worst = 0.0
    for t in range(1, tasks + 1):
        x = load_file(a / "adapters" / f"task_{t}" / "adapter_model.safetensors")
        y = load_file(b / "adapters" / f"task_{t}" / "adapter_model.safetensors")
        assert x.keys() == y.keys()
        for key in x:
            worst = max(worst, float((x[key].float() - y[key].float()).abs().max()))
    return worst


def examples_equal(a: Path, b: Path) -> bool:
    x, y = np.load(a / "examples.npz"), np.load(b / "examples.npz")
    return x.files == y.files and all(np.array_equal(x[k], y[k]) for k in x.files)


def same_tensors(x: dict[str, torch.Tensor], y: dict[str, torch.Tensor]) -> bool:
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
