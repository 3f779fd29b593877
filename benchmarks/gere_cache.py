"""GeRe's compact state cache against the reference layout, and TM replay's step time.

1. Bytes: our cache (base-3 packed states, 1.6 bits per element, plus fp64/fp32 thresholds and
   row offsets) against what the reference (`Qznan/GeRe`) stores for the same replay set and
   model: one file per sample holding its final hidden states in fp32 ([tokens, dim], saved
   with `.float()`), plus a statistics file with mean, var, std, sum and sum of squares (fp32
   [dim] each). Only the tensors' payload is counted for the reference (its per-file
   container overhead would make it larger still).
   Both byte counts are exact, so their ratio has no noise and needs no rounds.
2. Step time: `gere` with `tm` against `gere_lm` (label fitting only) on the same batch, a
   one-step task each, the two alternating within each round (on a shared machine, load
   changes within seconds). Measured per call of `train_task` (the step plus the task's own
   set-up: optimizer, planner, log), in wall-clock and CPU time, and from the loop's logged
   step wall-clock (plan, collate, forward, losses, backward, clip, AdamW); each ratio is the
   median of the rounds' paired ratios with an interval over rounds (benchmarks/rounds.py).

    OMP_NUM_THREADS=1 python benchmarks/gere_cache.py --model smollm2-135m --rows 32 \
        --max-tokens 128 [--rounds 12]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from rounds import Goal, Timing, paired_ratios, ratio_lines, run_rounds, timed

from retain.config import load_config
from retain.methods.gere.plugin import GeneralReplayPlugin
from retain.train.loop import ContinualTrainer

SOURCE = "../shared/data/general_text/llamafactory_demo/c4_demo.json"


def trainer_for(args: argparse.Namespace, loss: str, out: str) -> ContinualTrainer:
    config = load_config(None, [
        f"model.name_or_path={args.model}", "data.stream=builtin", "data.max_train_per_task=200",
        "data.max_test_per_task=4", f"data.max_length={args.max_length}", "data.valid_per_task=0",
        "train.steps_per_task=1", f"train.batch_size={args.batch_size}",
        "train.progress=false", "train.lr=1e-4", f"output_dir={out}", f"name={loss}",
        "methods=[gere]", f"general.loss={loss}", f"general.source={args.source}",
        f"general.size={args.rows}", f"general.max_tokens={args.max_tokens}",
        "general.mixing=per_batch", f"general.per_batch_rows={args.k}",
    ])
    trainer = ContinualTrainer(config)
    trainer.parts.plugins[0].on_stream_start(trainer.parts.ctx)
    return trainer


def last_step_seconds(trainer: ContinualTrainer) -> float:
    lines = (trainer.parts.run_dir / "log.jsonl").read_text().splitlines()
    return float([json.loads(x) for x in lines if '"type": "step"' in x][-1]["seconds"])


def cache_bytes(plugin: GeneralReplayPlugin) -> tuple[int, int, int, int]:
    """(ours, reference, tokens, dim) for the plugin's replay set."""
    assert plugin.cache is not None and plugin.replay is not None
    cache, dim = plugin.cache, plugin.cache.dim
    tokens = plugin.replay.tokens
    ours = cache.nbytes + cache.offsets.nbytes
    ours += sum(int(t.numel() * t.element_size()) for t in plugin.moments.values())
    reference = tokens * dim * 4 + 5 * dim * 4
    return ours, reference, tokens, dim


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--source", default=SOURCE)
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--k", type=int, default=1, help="replay rows per global batch")
    parser.add_argument("--rounds", type=int, default=12, help="paired one-step tasks")
    parser.add_argument("--max-length", type=int, default=64, help="128 for tiny-random")
    args = parser.parse_args()
    if not Path(args.source).is_file():
        raise SystemExit(f"general text not found at {args.source}; pass --source")
    out = tempfile.mkdtemp()
    tm, lm = trainer_for(args, "tm", out), trainer_for(args, "lm", out)
    plugin = tm.parts.plugins[0]
    assert isinstance(plugin, GeneralReplayPlugin)
    ours, reference, tokens, dim = cache_bytes(plugin)
    print(f"model {args.model}: replay set {args.rows} rows, {tokens} tokens, hidden size {dim}")
    print(f"reference layout (fp32 per element + stats): {reference:>12,d} bytes")
    print(f"ours (1.6-bit states + thresholds + offsets): {ours:>11,d} bytes")
    print(f"cache ratio reference / ours: {reference / ours:.2f}x  (target >= 16; exact byte "
          "counts, no noise)")
    paper_tokens = 1000 * 563
    paper_ours = paper_tokens * plugin.cache.packed.shape[1] + 8 * 1001 + dim * 24
    paper_ref = paper_tokens * dim * 4 + 5 * dim * 4
    print(f"paper size (1000 rows x 563 tokens, same model): {paper_ref / 2**20:,.1f} MiB vs "
          f"{paper_ours / 2**20:,.1f} MiB = {paper_ref / paper_ours:.2f}x")

    for trainer in (lm, tm):  # warm-up: allocator, kernels
        trainer.train_task(0, 0, None)
    def step(trainer: ContinualTrainer) -> tuple[Timing, float]:
        timing = timed(lambda: trainer.train_task(0, 0, None))  # one step, the first batch
        return timing, last_step_seconds(trainer)

    runs = run_rounds({"lm": lambda: step(lm), "tm": lambda: step(tm)}, args.rounds)
    calls = {name: [t for t, _ in r] for name, r in runs.items()}
    logged = {name: [s for _, s in r] for name, r in runs.items()}

    def ratios(values: dict[str, list[float]]) -> list[float]:
        return paired_ratios(values["tm"], values["lm"])

    def med(name: str) -> str:
        return (f"{statistics.median(t.wall for t in calls[name]):.3f} s wall, "
                f"{statistics.median(t.cpu for t in calls[name]):.3f} s CPU, logged step "
                f"{statistics.median(logged[name]):.3f} s")

    print(f"one-step task of {args.batch_size} rows ({args.k} replay row), threads "
          f"{torch.get_num_threads()}, median of {args.rounds} rounds: lm {med('lm')}; "
          f"tm {med('tm')}")
    print("\n".join(ratio_lines("step time tm / lm", {
        "wall-clock": ratios({n: [t.wall for t in c] for n, c in calls.items()}),
        "CPU time": ratios({n: [t.cpu for t in c] for n, c in calls.items()}),
        "logged step wall-clock": ratios(logged),
    }, Goal(1.05))))
    call = tm_call_seconds(tm)
    print(f"TM's own work (cache decode + loss) per micro-batch: {1e3 * call:.2f} ms = "
          f"{100 * call / statistics.median(logged['tm']):.3f} % of a logged tm step")


def tm_call_seconds(trainer: ContinualTrainer, repeats: int = 20) -> float:
    """Median seconds of the plugin's `extra_loss` on one micro-batch's outputs: what `tm`
    adds to a step besides the shared forward and backward (robust against machine load)."""
    from retain.data.encoding import collate
    from retain.train.batches import task_planner
    from retain.train.step import forward

    ctx, plugin = trainer.parts.ctx, trainer.parts.plugins[0]
    pool = plugin.task_data(ctx, 0, list(ctx.task_samples[0]))
    parts = trainer.parts
    tc = parts.config.train
    planner = task_planner(parts.store, pool, parts.config.seed, 0, ctx, tc.batch_size,
                           tc.grad_accum, [], [plugin], plugin.reserved_rows(ctx))
    pad = int(trainer.parts.tokenizer.pad_token_id)
    batch = collate(trainer.parts.store, planner.plan(0).plans[0], pad).to(trainer.parts.device)
    outputs, _ = forward(trainer.parts.model, batch, trainer.parts.hidden_source)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        plugin.extra_loss(ctx, batch, outputs)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


if __name__ == "__main__":
    main()
