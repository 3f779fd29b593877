"""GeRe's compact state cache against the reference layout, and TM replay's step time.

1. Bytes: our cache (base-3 packed states, 1.6 bits per element, plus fp64/fp32 thresholds and
   row offsets) against what the reference (`Qznan/GeRe`) stores for the same replay set and
   model: one file per sample holding its final hidden states in fp32 ([tokens, dim], saved
   with `.float()`), plus a statistics file with mean, var, std, sum and sum of squares (fp32
   [dim] each). Only the tensors' payload is counted for the reference (its per-file
   container overhead would make it larger still).
2. Step time: `gere` with `tm` against `gere_lm` (label fitting only) on the same batches, same
   seed, interleaved rounds; the ratio of median step seconds.

    python benchmarks/gere_cache.py --model smollm2-135m --rows 32 --max-tokens 128
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from retain.config import load_config
from retain.methods.gere.plugin import GeneralReplayPlugin
from retain.train.loop import ContinualTrainer

SOURCE = "../shared/data/general_text/llamafactory_demo/c4_demo.json"


def trainer_for(args: argparse.Namespace, loss: str, out: str) -> ContinualTrainer:
    config = load_config(None, [
        f"model.name_or_path={args.model}", "data.stream=builtin", "data.max_train_per_task=200",
        "data.max_test_per_task=4", "data.max_length=64", "data.valid_per_task=0",
        f"train.steps_per_task={args.steps}", f"train.batch_size={args.batch_size}",
        "train.progress=false", "train.lr=1e-4", f"output_dir={out}", f"name={loss}",
        "methods=[gere]", f"general.loss={loss}", f"general.source={args.source}",
        f"general.size={args.rows}", f"general.max_tokens={args.max_tokens}",
        "general.mixing=per_batch", f"general.per_batch_rows={args.k}",
    ])
    trainer = ContinualTrainer(config)
    trainer.plugins[0].on_stream_start(trainer.ctx)
    return trainer


def step_seconds(trainer: ContinualTrainer) -> list[float]:
    """Seconds of the last round's steps but its first (the optimizer is new there)."""
    lines = (trainer.run_dir / "log.jsonl").read_text().splitlines()
    steps = [json.loads(x) for x in lines if '"type": "step"' in x]
    return [r["seconds"] for r in steps[-(trainer.config.train.steps_per_task - 1):]]


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
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not Path(args.source).is_file():
        raise SystemExit(f"general text not found at {args.source}; pass --source")
    out = tempfile.mkdtemp()
    tm, lm = trainer_for(args, "tm", out), trainer_for(args, "lm", out)
    plugin = tm.plugins[0]
    assert isinstance(plugin, GeneralReplayPlugin)
    ours, reference, tokens, dim = cache_bytes(plugin)
    print(f"model {args.model}: replay set {args.rows} rows, {tokens} tokens, hidden size {dim}")
    print(f"reference layout (fp32 per element + stats): {reference:>12,d} bytes")
    print(f"ours (1.6-bit states + thresholds + offsets): {ours:>11,d} bytes")
    print(f"cache ratio reference / ours: {reference / ours:.2f}x  (target >= 16)")
    paper_tokens = 1000 * 563
    paper_ours = paper_tokens * plugin.cache.packed.shape[1] + 8 * 1001 + dim * 24
    paper_ref = paper_tokens * dim * 4 + 5 * dim * 4
    print(f"paper size (1000 rows x 563 tokens, same model): {paper_ref / 2**20:,.1f} MiB vs "
          f"{paper_ours / 2**20:,.1f} MiB = {paper_ref / paper_ours:.2f}x")

    medians: dict[str, list[float]] = {"tm": [], "lm": []}
    for r in range(args.rounds):
        for name, trainer in (("lm", lm), ("tm", tm)):
            trainer.train_task(0, 0, None)
            medians[name].append(statistics.median(step_seconds(trainer)))
            print(f"round {r + 1} {name}: median step {medians[name][-1]:.3f} s")
    ratio = statistics.median(medians["tm"]) / statistics.median(medians["lm"])
    print(f"{args.steps} steps x {args.batch_size} rows ({args.k} replay row per step), "
          f"threads {torch.get_num_threads()}")
    print(f"step time tm / lm (median of {args.rounds} rounds): {ratio:.3f}  (target <= 1.05)")


if __name__ == "__main__":
    main()
