"""MSSR's cost over fixed replay with the same replay budget: wall-clock and peak memory.

Both run on the same model, stream, seed and number of optimizer steps. The budget is equalised:
λ is held constant at `replay.lam` for MSSR (λ0 = λmin), and MSSR's expanding schedule places
as many one-unit events in a 20-unit task (at 1, 2.5, 4.6, 7.7, 12, 18 units) as fixed replay
does every 3 units (3, 6, …, 18): the printed replayed-sample counts show it. Each run is its own
process (peak memory is per process); rounds alternate the order to spread machine noise.

    .venv/bin/python benchmarks/mssr_overhead.py [--model smollm2-135m] [--steps 20] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile

CHILD = """
import json, resource, sys, time
from retain.config import load_config
from retain.train.loop import ContinualTrainer
cfg = load_config(None, sys.argv[1:])
trainer = ContinualTrainer(cfg)
start = time.perf_counter()
for t in range(len(trainer.stream)):
    trainer.train_task(t, 0, None)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "counters": trainer.ctx.counters,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_method(method: str, args: argparse.Namespace, out: str) -> dict:
    overrides = [
        f"model.name_or_path={args.model}", "data.stream=builtin", "data.max_train_per_task=200",
        "data.max_test_per_task=4", "data.max_length=64", "data.valid_per_task=0",
        "data.num_tasks=3",
        f"train.steps_per_task={args.steps}", f"train.batch_size={args.batch_size}",
        "train.progress=false", f"output_dir={out}", f"name={method}", f"methods=[{method}]",
        "replay.lam=0.25", "mssr.lam0=0.25", "mssr.lam_min=0.25", "replay.interval_units=3",
    ]
    proc = subprocess.run([sys.executable, "-c", CHILD, *overrides], capture_output=True,
                          text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    results: dict[str, list[dict]] = {"fixed": [], "mssr": []}
    for r in range(args.rounds):
        order = ["fixed", "mssr"] if r % 2 == 0 else ["mssr", "fixed"]
        for method in order:
            res = run_method(method, args, tempfile.mkdtemp())
            results[method].append(res)
            counters = res["counters"]
            print(f"round {r + 1} {method:<6} train {res['seconds']:7.2f} s  peak "
                  f"{res['peak_mb']:8.1f} MB  replayed {counters.get('replayed_rows', 0):.0f}"
                  f" of {counters.get('samples', 0):.0f} samples")

    def median(method: str, key: str) -> float:
        return statistics.median(r[key] for r in results[method])

    time_ratio = median("mssr", "seconds") / median("fixed", "seconds")
    mem_ratio = median("mssr", "peak_mb") / median("fixed", "peak_mb")
    print(f"model {args.model}, builtin stream, {args.steps} steps/task x {args.batch_size} rows")
    print(f"mssr / fixed wall-clock: {time_ratio:.3f}  (target <= 1.02; paper 1.05)")
    print(f"mssr / fixed peak memory: {mem_ratio:.3f}  (target <= 1.02; paper 1.06)")


if __name__ == "__main__":
    main()
