"""ProCL's cost against plain LoRA: inference latency (target ≤ 1.01×, the paper's "no extra
inference cost") and training step time against `seq_lora` (target ≤ 1.15×).

Both sides live in one process on the same backbone, LoRA rank, stream, seed and batches. Both
train task 1 (plain LoRA for both, untimed); then task 2 is trained again and again, each round
training both back to back in alternating order, and the time of each whole task (loop,
routing, consolidation, logging) is divided by its steps. For inference the plain-LoRA model
is given ProCL's factors, so both compute the same function (the logits are checked equal) and
only the wrapping differs: a forward of a batch (prefill) and greedy decoding of one prompt
(per-token latency, where a per-layer Python cost would show most), each a round of one call
per side, alternating. Every ratio is the median of the rounds' paired ratios with an interval
over rounds, in wall-clock and in CPU time, and a verdict on its goal (benchmarks/rounds.py).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/procl_cost.py [--model smollm2-135m] \
        [--steps 10] [--rounds 6] [--batch-size 8] [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Callable

import torch
from rounds import Goal, Timing, run_rounds, time_ratio_lines, timed

from retain.config import load_config
from retain.train.loop import ContinualTrainer


def make_trainer(method: str, args: argparse.Namespace, out: str) -> ContinualTrainer:
    config = load_config(None, [
        f"model.name_or_path={args.model}", "data.stream=builtin", "data.max_train_per_task=200",
        "data.max_test_per_task=4", f"data.max_length={args.max_length}", "data.valid_per_task=0",
        "data.num_tasks=2", f"train.steps_per_task={args.steps}",
        f"train.batch_size={args.batch_size}", "train.progress=false", "train.lr=1e-4",
        f"model.lora.r={args.rank}", f"output_dir={out}", f"name={method}", f"methods=[{method}]",
    ])
    return ContinualTrainer(config)


INFERENCE_GOAL = Goal(1.01)  # the paper's "no extra inference cost"
TRAINING_GOAL = Goal(1.15)


def alternate(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[Timing]]:
    """Timings of `repeats` paired rounds of one call of each function, after a warm-up."""
    for fn in fns.values():
        fn()
    return run_rounds({name: (lambda fn=fn: timed(fn)) for name, fn in fns.items()}, repeats)


def per_step(timing: Timing, steps: int) -> Timing:
    return Timing(timing.wall / steps, timing.cpu / steps)


def factor_calls(model: torch.nn.Module, calls: int) -> Callable[[], object]:
    """One LoRA factor called `calls` times on one token: the per-call cost of the wrapper."""
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    factor = layer.lora_A[next(iter(layer.lora_A))]
    x = torch.randn(1, 1, factor.in_features)

    def run() -> None:
        for _ in range(calls):
            factor(x)

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=64, help="128 for tiny-random")
    parser.add_argument("--repeats", type=int, default=20, help="paired inference rounds")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    out = tempfile.mkdtemp()
    trainers = {m: make_trainer(m, args, out) for m in ("seq_lora", "procl")}
    for trainer in trainers.values():
        trainer.train_task(0, 0, None)  # task 1: plain LoRA for both

    # ------------------------------------------------------------ training: task 2
    def train(method: str) -> Timing:
        return per_step(timed(lambda: trainers[method].train_task(1, 0, None)), args.steps)

    def show(r: int, method: str, t: Timing) -> None:
        print(f"round {r + 1} {method:<8} task 2: {t.wall:.3f} s/step wall, "
              f"{t.cpu:.3f} s/step CPU", flush=True)

    step = run_rounds({m: (lambda m=m: train(m)) for m in trainers}, args.rounds, show)

    # ------------------------------------------------------------ inference
    procl = trainers["procl"].parts.inner_model().eval()
    plain = trainers["seq_lora"].parts.inner_model().eval()
    factors = dict(procl.named_parameters())
    with torch.no_grad():
        for name, p in plain.named_parameters():
            if "lora_" in name:
                p.copy_(factors[name])
    g = torch.Generator().manual_seed(0)
    vocab = int(procl.get_input_embeddings().weight.shape[0])
    batch = torch.randint(0, vocab, (args.batch_size, args.prompt_tokens), generator=g)
    prompt = batch[:1]
    models = {"plain LoRA": plain, "procl": procl}
    with torch.no_grad():
        same = torch.equal(procl(input_ids=batch).logits, plain(input_ids=batch).logits)

        def forward(model: torch.nn.Module) -> Callable[[], object]:
            return lambda: model(input_ids=batch)

        def decode(model: torch.nn.Module) -> Callable[[], object]:
            return lambda: model.generate(
                input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)

        prefill = alternate({n: forward(m) for n, m in models.items()}, args.repeats)
        decoding = alternate({n: decode(m) for n, m in models.items()}, args.repeats)
        calls = alternate({n: factor_calls(m, 2000) for n, m in models.items()}, args.repeats)
    for trainer in trainers.values():
        trainer.close()

    def med(values: list[Timing]) -> str:
        return (f"{statistics.median(t.wall for t in values):.4f} wall, "
                f"{statistics.median(t.cpu for t in values):.4f} CPU")

    def us(values: list[Timing]) -> str:
        return (f"{statistics.median(t.wall for t in values) / 2e-3:.2f} wall, "
                f"{statistics.median(t.cpu for t in values) / 2e-3:.2f} CPU")

    print(f"model {args.model}, LoRA r={args.rank} on q_proj/v_proj, builtin stream, "
          f"{args.steps} steps of {args.batch_size} rows per round, {args.rounds} training rounds,"
          f" {args.repeats} inference rounds, threads {torch.get_num_threads()}")
    print(f"procl eval logits identical to plain LoRA with the same factors: {same}")
    print(f"train s/step (median)        seq_lora {med(step['seq_lora'])}"
          f"   procl {med(step['procl'])}")
    print(f"prefill s ({args.batch_size}x{args.prompt_tokens}, median)   plain "
          f"{med(prefill['plain LoRA'])}   procl {med(prefill['procl'])}")
    print(f"decode s ({args.new_tokens} tokens, median)  plain {med(decoding['plain LoRA'])}"
          f"   procl {med(decoding['procl'])}")
    print(f"one factor call us (median)  plain {us(calls['plain LoRA'])}"
          f"   procl {us(calls['procl'])}")
    lines = time_ratio_lines("procl / plain LoRA inference, prefill", prefill["procl"],
                             prefill["plain LoRA"], INFERENCE_GOAL)
    lines += time_ratio_lines("procl / plain LoRA inference, decode", decoding["procl"],
                              decoding["plain LoRA"], INFERENCE_GOAL)
    lines += time_ratio_lines("procl / plain LoRA, one factor call", calls["procl"],
                              calls["plain LoRA"], INFERENCE_GOAL)
    lines += time_ratio_lines("procl / seq_lora training step", step["procl"],
                              step["seq_lora"], TRAINING_GOAL)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
