"""Evaluation cost of `eval.cells=needed` against `all` on a long stream, side by side.

The metrics need row 0, the lower triangle and the superdiagonal of the score matrix; `needed`
evaluates only those. Both runs use the same model, data and training; the benchmark prints the
evaluation seconds of each, their ratio, and checks that every cell both evaluated is identical.

    .venv/bin/python benchmarks/eval_cells.py --stream olora-long-4 --test 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

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
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="retain-eval-cells-"))
    results = {}
    for cells in ("all", "needed"):
        overrides = [
            f"model.name_or_path={args.model}", f"data.stream={args.stream}",
            f"data.max_test_per_task={args.test}", "data.max_train_per_task=16",
            "data.valid_per_task=0", "data.max_length=256", f"train.steps_per_task={args.steps}",
            "train.batch_size=2", "train.progress=false", f"eval.cells={cells}",
            f"output_dir={out}", f"name={cells}",
        ]
        if args.data_dir:
            overrides.append(f"data.data_dir={args.data_dir}")
        result = run(load_config(None, overrides))
        seconds = [json.loads(line)["seconds"] for line in
                   (result.run_dir / "log.jsonl").read_text().splitlines()
                   if '"type": "eval"' in line]
        results[cells] = (sum(seconds), ScoreMatrix.from_csv(result.run_dir / "scores.csv"))
    (t_all, m_all), (t_needed, m_needed) = results["all"], results["needed"]
    shared = np.isfinite(m_needed.R)
    same = bool(np.array_equal(m_all.R[shared], m_needed.R[shared]))
    T = m_all.num_tasks
    print(f"stream {args.stream}: {T} tasks, {args.test} test examples per task, {args.model}")
    print(f"cells evaluated: all {int(np.isfinite(m_all.R).sum())}, needed {int(shared.sum())}")
    print(f"evaluation seconds: all {t_all:.1f}, needed {t_needed:.1f}")
    print(f"needed / all evaluation time = {t_needed / t_all:.3f}")
    print(f"shared cells identical: {same}")


if __name__ == "__main__":
    main()
