"""Option scoring speed: retain's cached-prefix scorer against the naive way and generation.

Same model, same prompts (a 4-option multiple-choice task), measured side by side in one run:
- naive: one full forward per prompt–option pair (what evaluation harnesses commonly do),
- retain: prompts batched and length-sorted, each encoded once, options scored from the cache,
- generation: 32-token greedy generation per prompt (batched, KV cache), as generative scoring.
Each round runs the three back to back, in forward then reverse order. Prints the predictions'
agreement and the speed ratios as medians of the rounds' paired ratios with an interval over
rounds, in wall-clock and CPU time, with a verdict on the goal (benchmarks/rounds.py).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scoring.py [--model smollm2-135m] [--n 64] \
        [--task openbookqa] [--rounds 6]
"""

from __future__ import annotations

import argparse
import statistics

import torch
from rounds import Goal, Timing, measure, run_rounds, time_ratio_lines

from retain.config import DataConfig, ModelConfig
from retain.data.streams import load_stream
from retain.eval.evaluate import encode_eval_set
from retain.eval.scoring import generate, score_options, score_options_reference
from retain.models.loading import load_backbone


def _task(name: str, n: int, data_dir: str):
    """A 4-option task from the reasoning-5 stream (openbookqa or arc-challenge)."""
    stream = load_stream(
        DataConfig(stream="reasoning-5", data_dir=data_dir, max_test_per_task=n, valid_per_task=0)
    )
    return next(t for t in stream.tasks if t.name == name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="openbookqa")
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    torch.manual_seed(0)
    model, tok = load_backbone(ModelConfig(name_or_path=args.model))
    model.eval()
    task = _task(args.task, args.n, args.data_dir)
    data = encode_eval_set(tok, task, task.test, 512)
    assert data.options is not None
    print(f"model {args.model}, task {task.name}: {len(data.prompts)} prompts x "
          f"{len(data.options[0])} options, threads {torch.get_num_threads()}")

    score_options(model, data.prompts[:2], data.options[:2], tok.pad_token_id)  # warm-up
    pad = tok.pad_token_id
    runs = run_rounds({
        "naive": lambda: measure(lambda: score_options_reference(model, data.prompts,
                                                                 data.options)),
        "retain": lambda: measure(lambda: score_options(model, data.prompts, data.options, pad,
                                                        args.batch_size)),
        "generation": lambda: measure(lambda: generate(model, data.prompts, pad, None, 32,
                                                       args.batch_size)),
    }, args.rounds)
    naive, ours = runs["naive"][0][0], runs["retain"][0][0]
    times: dict[str, list[Timing]] = {name: [t for _, t in r] for name, r in runs.items()}

    def argmax(rows: list[list[float]]) -> list[int]:
        return [max(range(len(r)), key=r.__getitem__) for r in rows]

    same = sum(a == b for a, b in zip(argmax(naive), argmax(ours), strict=True))
    diff = max(abs(x - y) for a, b in zip(naive, ours, strict=True) for x, y in zip(a, b,
                                                                                   strict=True))
    print(f"same predictions: {same}/{len(ours)}   max |log-lik difference|: {diff:.2e}")
    def med(name: str) -> str:
        return (f"{statistics.median(t.wall for t in times[name]):7.2f} s wall, "
                f"{statistics.median(t.cpu for t in times[name]):7.2f} s CPU")

    print(f"median of {args.rounds} rounds:")
    print(f"naive (one forward per pair): {med('naive')}")
    print(f"retain (cached prefix):       {med('retain')}")
    print(f"32-token greedy generation:   {med('generation')}")
    lines = time_ratio_lines("speed-up vs naive", times["naive"], times["retain"],
                             Goal(3.0, at_most=False))
    lines += time_ratio_lines("speed-up vs generation", times["generation"], times["retain"],
                              None)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
