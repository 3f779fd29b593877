"""Engine overhead: retain's training tokens/s against a minimal hand-written PyTorch loop.

Same model (one LoRA-wrapped copy), same batches (drawn and collated by the same code), same
optimiser (AdamW, same lr), no gradient clipping on either side. Each round runs both loops
back to back, the order alternating; the time covers everything each loop does per task,
retain's plugin dispatch, logging, scheduler and progress bar included. The minimal loop gets
its batches pre-collated (outside its timing), which only makes the comparison harder for
retain. The ratio is the median of the rounds' paired ratios with an interval over rounds, in
wall-clock and CPU time, with a verdict on the goal (benchmarks/rounds.py).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/engine_overhead.py [--model smollm2-135m] \
        [--steps 20] [--rounds 6]
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from rounds import Goal, Timing, run_rounds, time_ratio_lines, timed

from retain.config import load_config
from retain.data.encoding import BatchPlan, collate
from retain.train.batches import TaskOrder
from retain.train.loop import ContinualTrainer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=64, help="128 for tiny-random")
    args = parser.parse_args()
    out = tempfile.mkdtemp()
    config = load_config(None, [
        f"model.name_or_path={args.model}", "data.stream=builtin", "data.max_train_per_task=200",
        "data.max_test_per_task=4", f"data.max_length={args.max_length}",
        f"train.steps_per_task={args.steps}",
        f"train.batch_size={args.batch_size}", "train.max_grad_norm=null", "train.progress=false",
        "train.lr=1e-4", f"output_dir={out}", "name=overhead",
    ])
    trainer = ContinualTrainer(config)
    model, pad = trainer.parts.model, int(trainer.parts.tokenizer.pad_token_id)
    pool = trainer.parts.ctx.task_samples[0]
    order = TaskOrder(pool, config.seed, 0, args.batch_size)
    batches = [
        collate(trainer.parts.store, BatchPlan(order.batch(k), [False] * args.batch_size), pad)
        for k in range(args.steps)
    ]
    tokens = sum(int(b.attention_mask.sum()) for b in batches)

    def retain_loop() -> None:
        trainer.train_task(0, 0, None)

    def minimal_loop() -> None:
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        model.train()
        for batch in batches:
            loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                         labels=batch.labels).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    def show(r: int, name: str, t: Timing) -> None:
        print(f"round {r + 1} {name:<8} {tokens / t.wall:8.1f} tokens/s wall, "
              f"{tokens / t.cpu:8.1f} tokens/CPU-s", flush=True)

    minimal_loop()  # warm-up: allocator, kernels
    times = run_rounds({"retain": lambda: timed(retain_loop),
                        "minimal": lambda: timed(minimal_loop)}, args.rounds, show)
    print(f"model {args.model}, {args.steps} steps x {args.batch_size} rows, {tokens} tokens/round,"
          f" threads {torch.get_num_threads()}")
    # tokens/s of retain over the minimal loop's = the minimal loop's time over retain's
    print("\n".join(time_ratio_lines("retain / minimal tokens/s", times["minimal"],
                                     times["retain"], Goal(0.97, at_most=False))))


if __name__ == "__main__":
    main()
