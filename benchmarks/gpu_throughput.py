"""Training throughput: retain's loop against Hugging Face `Trainer` (tokens/s, target >= 1.0).

Same model (loaded twice from the same source, same LoRA), same batches (drawn and collated by
retain's code, handed to `Trainer` pre-collated in the same order), same precision, optimiser
(AdamW, same lr, cosine schedule with warm-up) and gradient clipping. Each side runs a warm-up
round first; the timed rounds alternate which side goes first, and the ratio is the median of
the per-round paired ratios with an order-statistic interval over rounds (`rounds.py`). With
`--sharding fsdp2` retain's side runs sharded with FSDP2 (`train.sharding=fsdp2`; a single
rank here: a one-process group of its own), which is how the sharded path is exercised on
the one GPU a session may be lent.

`--layers/--hidden/--heads` build a random Llama from its config (byte vocabulary) instead of
loading weights: a model of a realistic size without shipping its weights to the machine.

    .venv/bin/python benchmarks/gpu_throughput.py                       # smollm2-135m, GPU
    .venv/bin/python benchmarks/gpu_throughput.py --layers 16 --hidden 2048 --heads 16
    .venv/bin/python benchmarks/gpu_throughput.py --smoke               # tiny, CPU, seconds

It has not yet run on a GPU (no GPU was lent where it was written); `--smoke` runs in the
test suite (tests/test_fsdp.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from typing import Any

import torch
from rounds import Goal, Summary, paired_ratios, ratio_lines


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--layers", type=int, default=0, help="> 0: a random Llama of this size")
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--finetune", choices=["lora", "full"], default="lora")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--precision", choices=["auto", "no", "fp16", "bf16"], default="auto")
    parser.add_argument("--sharding", choices=["none", "fsdp2"], default="none")
    parser.add_argument("--json", help="also write the numbers to this file")
    parser.add_argument("--smoke", action="store_true", help="tiny model, 3 steps, 1 round")
    args = parser.parse_args()
    if args.smoke:
        args.model, args.layers, args.steps, args.rounds = "tiny-random", 0, 3, 1
        args.batch_size, args.max_length = 4, 128
    return args


def _model(args: argparse.Namespace, device: torch.device) -> tuple[Any, Any]:
    from retain.config import ModelConfig
    from retain.models.loading import load_backbone
    from retain.models.tiny import tiny_model_and_tokenizer

    if args.layers > 0:
        model, tokenizer = tiny_model_and_tokenizer(
            layers=args.layers, hidden=args.hidden, heads=args.heads
        )
        return model.to(device), tokenizer
    return load_backbone(ModelConfig(name_or_path=args.model), device)


def main() -> None:
    args = _parse()
    from transformers import Trainer, TrainingArguments

    from retain.config import load_config
    from retain.data.encoding import BatchPlan, collate
    from retain.models.adapters import prepare_for_finetuning
    from retain.train.batches import TaskOrder
    from retain.train.loop import ContinualTrainer

    out = tempfile.mkdtemp()
    config = load_config(None, [
        f"model.name_or_path={args.model}", f"model.finetune={args.finetune}",
        "model.lora.target_modules=[q_proj,v_proj]", "data.stream=builtin",
        f"data.max_train_per_task={max(64, args.steps * args.batch_size)}",
        "data.max_test_per_task=4", f"data.max_length={args.max_length}",
        f"train.steps_per_task={args.steps}", f"train.batch_size={args.batch_size}",
        f"train.mixed_precision={args.precision}", f"train.sharding={args.sharding}",
        "train.progress=false", "train.lr=1e-4", "train.warmup_ratio=0.1",
        f"output_dir={out}", "name=throughput",
    ])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = _model(args, device)
    trainer = ContinualTrainer(config, model=model, tokenizer=tokenizer)
    precision = trainer.parts.accelerator.mixed_precision
    pool = trainer.parts.ctx.task_samples[0]
    order = TaskOrder(pool, config.seed, 0, args.batch_size)
    pad = int(trainer.parts.tokenizer.pad_token_id)
    batches = [
        collate(trainer.parts.store, BatchPlan(order.batch(k), [False] * args.batch_size), pad)
        for k in range(args.steps)
    ]
    tokens = sum(int(b.attention_mask.sum()) for b in batches)

    hf_model, _ = _model(args, device)
    hf_model = prepare_for_finetuning(hf_model, config.model)
    hf_args = TrainingArguments(
        output_dir=f"{out}/hf", per_device_train_batch_size=args.batch_size,
        max_steps=args.steps, learning_rate=1e-4, lr_scheduler_type="cosine", warmup_steps=0.1,
        max_grad_norm=1.0, weight_decay=0.0, bf16=precision == "bf16",
        fp16=precision == "fp16", use_cpu=device.type == "cpu", report_to=[],
        logging_strategy="no", save_strategy="no", disable_tqdm=True,
        remove_unused_columns=False,
    )
    rows = [
        {"input_ids": b.input_ids, "attention_mask": b.attention_mask, "labels": b.labels}
        for b in batches
    ]

    class Precollated(Trainer):
        """`Trainer` fed retain's very batches, in retain's order."""

        def get_train_dataloader(self) -> Any:
            return rows

    hf = Precollated(model=hf_model, args=hf_args)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def retain_round() -> float:
        sync()
        start = time.perf_counter()
        trainer.train_task(0, 0, None)
        sync()
        return tokens / (time.perf_counter() - start)

    def trainer_round() -> float:
        """Timed by `Trainer` itself (`train_runtime`, its training loop without the set-up
        around it), which favours `Trainer`: retain's time includes its per-task set-up."""
        sync()
        start = time.perf_counter()
        runtime = float(hf.train().metrics["train_runtime"])
        sync()
        print(f"  (Trainer: {time.perf_counter() - start:.3f} s wall, {runtime:.3f} s runtime)")
        return tokens / runtime

    retain_round(), trainer_round()  # warm-up: allocator, kernels, compilation caches
    ours, theirs = [], []
    sides = (("retain", retain_round, ours), ("Trainer", trainer_round, theirs))
    for r in range(args.rounds):  # paired rounds, the order alternating (benchmarks/rounds.py)
        for name, fn, sink in sides if r % 2 == 0 else sides[::-1]:
            sink.append(fn())
            print(f"round {r + 1} {name:<8} {sink[-1]:10.1f} tokens/s", flush=True)
    ratios = paired_ratios(ours, theirs)
    ratio = Summary.of(ratios)
    result = {
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
        "model": f"random llama {args.layers}x{args.hidden}" if args.layers else args.model,
        "finetune": args.finetune, "sharding": args.sharding, "precision": precision,
        "steps": args.steps, "batch_size": args.batch_size, "tokens_per_round": tokens,
        "retain_tokens_per_s": statistics.median(ours),
        "trainer_tokens_per_s": statistics.median(theirs), "ratio": ratio.median,
        "ratio_interval": [ratio.low, ratio.high], "ratio_confidence": ratio.confidence,
        "peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20
        if device.type == "cuda" else None,
    }
    print(json.dumps(result))
    for line in ratio_lines("retain / Trainer tokens/s", {"wall-clock": ratios},
                            Goal(1.0, at_most=False)):
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    trainer.close()


if __name__ == "__main__":
    main()
