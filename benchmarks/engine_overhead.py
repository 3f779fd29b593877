"""Engine overhead: retain's training tokens/s against a minimal hand-written PyTorch loop.

Same model (one LoRA-wrapped copy), same batches (drawn and collated by the same code), same
optimiser (AdamW, same lr), no gradient clipping on either side. Rounds alternate between the two
loops to spread machine noise; wall-clock covers everything each loop does per task, retain's
plugin dispatch, logging, scheduler and progress bar included. The minimal loop gets its batches
pre-collated (outside its timing), which only makes the comparison harder for retain.

    .venv/bin/python benchmarks/engine_overhead.py [--model smollm2-135m] [--steps 20] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from retain.config import load_config
from retain.data.encoding import BatchPlan, collate
from retain.train.batches import TaskOrder
from retain.train.loop import ContinualTrainer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    out = tempfile.mkdtemp()
    config = load_config(None, [
        f"model.name_or_path={args.model}", "data.stream=builtin", "data.max_train_per_task=200",
        "data.max_test_per_task=4", "data.max_length=64", f"train.steps_per_task={args.steps}",
        f"train.batch_size={args.batch_size}", "train.max_grad_norm=null", "train.progress=false",
        "train.lr=1e-4", f"output_dir={out}", "name=overhead",
    ])
    trainer = ContinualTrainer(config)
    model, pad = trainer.model, int(trainer.tokenizer.pad_token_id)
    pool = trainer.ctx.task_samples[0]
    order = TaskOrder(pool, config.seed, 0, args.batch_size)
    batches = [
        collate(trainer.store, BatchPlan(order.batch(k), [False] * args.batch_size), pad)
        for k in range(args.steps)
    ]
    tokens = sum(int(b.attention_mask.sum()) for b in batches)

    def retain_loop() -> float:
        start = time.perf_counter()
        trainer.train_task(0, 0, None)
        return tokens / (time.perf_counter() - start)

    def minimal_loop() -> float:
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        model.train()
        start = time.perf_counter()
        for batch in batches:
            loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                         labels=batch.labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return tokens / (time.perf_counter() - start)

    minimal_loop()  # warm-up: allocator, kernels
    ours, theirs = [], []
    for r in range(args.rounds):
        for name, fn, sink in (("retain", retain_loop, ours), ("minimal", minimal_loop, theirs)):
            sink.append(fn())
            print(f"round {r + 1} {name:<8} {sink[-1]:8.1f} tokens/s")
    ratio = statistics.median(ours) / statistics.median(theirs)
    print(f"model {args.model}, {args.steps} steps x {args.batch_size} rows, {tokens} tokens/round,"
          f" threads {torch.get_num_threads()}")
    print(f"retain / minimal tokens/s (median of {args.rounds} rounds): {ratio:.3f}"
          f"  (target >= 0.97)")


if __name__ == "__main__":
    main()
