"""Training step time: every position projected onto the vocabulary against only the answer
positions (`logits_to_keep`), side by side on the same model, batch and LoRA.

A causal-LM loss reads the logits of the answer positions only, yet the usual forward projects
every prompt token onto the vocabulary (49k rows of `lm_head` for SmolLM2) and back-propagates
through that projection. Each round times `--repeats` steps of each, back to back in alternating
order; prints both step times, the speed-up as the median of the rounds' paired ratios with an
interval over rounds (wall-clock and CPU time; the goal is only that it is faster,
benchmarks/rounds.py) and the largest loss difference.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/kept_logits.py [--model smollm2-135m] \
        [--rows 8] [--repeats 5] [--rounds 6]
"""

from __future__ import annotations

import argparse
import statistics

import torch
from peft import LoraConfig, get_peft_model
from rounds import Goal, Timing, run_rounds, time_ratio_lines, timed

from retain.config import ModelConfig
from retain.data.encoding import IGNORE_INDEX, Batch
from retain.models.loading import load_backbone
from retain.train.step import forward


def _batch(rows: int, prompt: tuple[int, int], answer: tuple[int, int], vocab: int) -> Batch:
    """Right-padded rows with prompt and answer lengths drawn from the given ranges."""
    gen = torch.Generator().manual_seed(0)
    lengths = [
        (int(torch.randint(*prompt, (1,), generator=gen)),
         int(torch.randint(*answer, (1,), generator=gen)))
        for _ in range(rows)
    ]
    width = max(p + a for p, a in lengths)
    ids = torch.randint(3, vocab, (rows, width), generator=gen)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, IGNORE_INDEX)
    for r, (p, a) in enumerate(lengths):
        mask[r, : p + a] = 1
        labels[r, p : p + a] = ids[r, p : p + a]
    zeros = torch.zeros(rows, dtype=torch.long)
    return Batch(ids, mask, labels, zeros, zeros, zeros.bool())


def _steps(model: torch.nn.Module, batch: Batch, full: bool, repeats: int) -> None:
    for _ in range(repeats):
        model.zero_grad()
        _, nll_sum = forward(model, batch, full_logits=full)
        nll_sum.sum().backward()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--prompt", type=int, nargs=2, default=(12, 40))
    parser.add_argument("--answer", type=int, nargs=2, default=(1, 6))
    parser.add_argument("--repeats", type=int, default=5, help="steps per side and round")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    model, _ = load_backbone(ModelConfig(name_or_path=args.model))
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    model = get_peft_model(model, lora).train()
    batch = _batch(args.rows, args.prompt, args.answer, model.config.vocab_size)
    answers = int((batch.labels != IGNORE_INDEX).sum())
    print(f"model {args.model}: {args.rows} rows x {batch.input_ids.shape[1]} positions, "
          f"{answers} answer tokens, threads {torch.get_num_threads()}")
    with torch.no_grad():
        full_out, _ = forward(model, batch, full_logits=True)
        kept_out, _ = forward(model, batch, full_logits=False)
    diff = float((full_out.per_sample_loss - kept_out.per_sample_loss).abs().max())
    _steps(model, batch, True, 1)  # warm-up

    def side(full: bool) -> Timing:
        t = timed(lambda: _steps(model, batch, full, args.repeats))
        return Timing(t.wall / args.repeats, t.cpu / args.repeats)

    times = run_rounds({"full": lambda: side(True), "kept": lambda: side(False)}, args.rounds)

    def med(name: str) -> str:
        return (f"{statistics.median(t.wall for t in times[name]):.3f} s/step wall, "
                f"{statistics.median(t.cpu for t in times[name]):.3f} s/step CPU")

    print(f"full projection   : {med('full')} (median of {args.rounds} rounds x {args.repeats})")
    print(f"answer positions  : {med('kept')}")
    print(f"largest per-row loss difference {diff:.2e}")
    print("\n".join(time_ratio_lines("speed-up full / answer positions", times["full"],
                                     times["kept"], Goal(1.0, at_most=False))))


if __name__ == "__main__":
    main()
