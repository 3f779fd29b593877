"""Evaluation cost of `eval.cells=needed` against `all` on a long stream, side by side.

The metrics need row 0, the lower triangle and the superdiagonal of the score matrix; `needed`
evaluates only those. Both runs use the same model, data and training; each round runs both
back to back, the order alternating, and the benchmark prints the evaluation seconds of each
(wall-clock and CPU time, summed over the run's evaluations as its log records them), the
median of the rounds' paired ratios needed / all with an interval over rounds and a verdict on
the goal that `needed` costs less (benchmarks/rounds.py), and checks that every cell both
evaluated is identical in every round.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eval_cells.py --stream olora-long-4 --test 2 \
        [--rounds 6]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from rounds import Goal, Timing, run_rounds, time_ratio_lines

from retain.config import load_config
from retain.eval.matrix import ScoreMatrix
from retain.train.loop import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", default="olora-long-4")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--test", type=int, default=2, help="test examples per task")
    parser.add_argument("--steps", type=int, default=1, help="optimizer steps per task")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="retain-eval-cells-"))
    counter = iter(range(10**6))

    def one_run(cells: str) -> tuple[Timing, ScoreMatrix]:
        overrides = [
            f"model.name_or_path={args.model}", f"data.stream={args.stream}",
            f"data.max_test_per_task={args.test}", "data.max_train_per_task=16",
            "data.valid_per_task=0", f"data.max_length={args.max_length}",
            f"train.steps_per_task={args.steps}", "train.batch_size=2", "train.progress=false",
            f"eval.cells={cells}", f"output_dir={out}", f"name={cells}-{next(counter)}",
        ]
        if args.data_dir:
            overrides.append(f"data.data_dir={args.data_dir}")
        result = run(load_config(None, overrides))
        evals = [json.loads(line) for line in
                 (result.run_dir / "log.jsonl").read_text().splitlines()
                 if '"type": "eval"' in line]
        timing = Timing(sum(e["seconds"] for e in evals), sum(e["cpu_seconds"] for e in evals))
        return timing, ScoreMatrix.from_csv(result.run_dir / "scores.csv")

    def show(r: int, cells: str, res: tuple[Timing, ScoreMatrix]) -> None:
        print(f"round {r + 1} {cells:<6} evaluation {res[0].wall:8.1f} s wall, "
              f"{res[0].cpu:8.1f} s CPU", flush=True)

    runs = run_rounds({c: (lambda c=c: one_run(c)) for c in ("all", "needed")}, args.rounds,
                      show)
    same = True
    for (_, m_all), (_, m_needed) in zip(runs["all"], runs["needed"], strict=True):
        shared = np.isfinite(m_needed.R)
        same &= bool(np.array_equal(m_all.R[shared], m_needed.R[shared]))
    m_all, m_needed = runs["all"][0][1], runs["needed"][0][1]
    print(f"stream {args.stream}: {m_all.num_tasks} tasks, {args.test} test examples per task, "
          f"{args.model}")
    print(f"cells evaluated: all {int(np.isfinite(m_all.R).sum())}, "
          f"needed {int(np.isfinite(m_needed.R).sum())}")
    print("\n".join(time_ratio_lines("needed / all evaluation time",
                                     [t for t, _ in runs["needed"]], [t for t, _ in runs["all"]],
                                     Goal(1.0))))  # the goal: `needed` costs less
    print(f"shared cells identical in every round: {same}")


if __name__ == "__main__":
    main()
