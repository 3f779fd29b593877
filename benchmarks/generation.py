"""Generation speed: retain's greedy evaluation against Hugging Face `generate`, and both scorers
against generation alone, on the test prompts of a real stream.

Same model, same prompts, same stopping (EOS, the task's stop strings, `max_new_tokens` from the
longest label), measured side by side in one process, per task and in total:
- HF per prompt: `model.generate` one prompt at a time,
- HF batched: `scoring.generate`, batched and length-sorted (evaluation's path before),
- retain: `decode.fast_generate`, rows leaving the batch at EOS/stop, the cell's common prompt
  prefix prefilled once,
- both: `both.score_and_generate`, the greedy answer and every option's log-likelihood from one
  prefill per batch (the options of a row in one sequence under a tree mask),
- with `--padded`, also retain-padded: retain with each batch prefilled in one padded forward
  (`RETAIN_PREFILL=padded`, the path before the padding-free prefill of `eval.unpadded`),
- with `--repeat`, also both-repeat: the same with the repeated-cache option pass (the cache
  copied for the decode and repeated once per option, the path before the tree mask and of a
  model that refuses a 4D mask).
Outputs of retain are compared with HF per prompt; each mismatch is shown with the gap between
the two top logits where the two first differ (a near-tie when < 1e-4).

Each round times the four ways on every task, the order of the ways alternating between rounds;
the ratios are medians of per-round paired ratios with an order-statistic interval over rounds
(`benchmarks/rounds.py`), for wall-clock and CPU time; per task, the median ratio (descriptive).

    nice -n 5 .venv/bin/python benchmarks/generation.py [--stream olora-standard-1] [--n 50]
        [--rounds 6] [--repeat] [--padded]
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from rounds import Goal, Timing, measure, time_ratio_lines

from retain.config import DataConfig, ModelConfig
from retain.data.streams import load_stream
from retain.eval.both import score_and_generate
from retain.eval.decode import fast_generate
from retain.eval.evaluate import encode_eval_set, model_context_length
from retain.eval.scoring import generate
from retain.eval.unpadded import MODE_ENV
from retain.models.loading import load_backbone


@torch.no_grad()
def _top2_gap(model: torch.nn.Module, prompt: list[int], shared: list[int]) -> float:
    """Gap of the two top logits after `prompt + shared` (where the two outputs part)."""
    ids = torch.tensor([prompt + shared])
    logits = model(input_ids=ids).logits[0, -1].float()
    top = torch.topk(logits, 2).values
    return float(top[0] - top[1])


def _first_difference(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


WAYS = ("single", "batched", "ours", "both")
REPEAT = "both-repeat"
PADDED = "ours-padded"


@contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


def _padded(run: Callable[[], Any]) -> Callable[[], Any]:
    """`run` with every batch prefilled in one padded forward."""
    def call() -> Any:
        with _env(MODE_ENV, "padded"):
            return run()
    return call


def _ways(model: torch.nn.Module, tok: Any, data: Any, bs: int) -> dict[str, Any]:
    """The ways of one task's prompts, as callables returning their outputs."""
    pad, eos = int(tok.pad_token_id), tok.eos_token_id
    new, stop, prompts = data.max_new_tokens, data.task.stop, data.prompts
    ways: dict[str, Any] = {
        "single": lambda: [
            generate(model, [p], pad, eos, new, 1, stop=stop, tokenizer=tok)[0] for p in prompts
        ],
        "batched": lambda: generate(model, prompts, pad, eos, new, bs, stop=stop, tokenizer=tok),
        "ours": lambda: fast_generate(model, prompts, pad, eos, new, bs, stop=stop, tokenizer=tok),
        "both": lambda: score_and_generate(
            model, prompts, data.options, pad, eos, new, bs, stop=stop, tokenizer=tok
        )[1],
        REPEAT: lambda: score_and_generate(
            model, prompts, data.options, pad, eos, new, bs, stop=stop, tokenizer=tok, tree=False
        )[1],
    }
    ways[PADDED] = _padded(ways["ours"])
    return ways


def _ratios(num: list[Timing], den: list[Timing]) -> str:
    """Median wall-clock ratio of a task over rounds (descriptive)."""
    return f"{statistics.median(a.wall / b.wall for a, b in zip(num, den, strict=True)):.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--stream", default="olora-standard-1")
    parser.add_argument("--n", type=int, default=50, help="test prompts per task")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--tasks", default="", help="comma-separated task names (default: all)")
    parser.add_argument("--rounds", type=int, default=6, help="paired rounds (>= 6 for a verdict)")
    parser.add_argument("--repeat", action="store_true",
                        help="also time both scorers with the repeated-cache option pass")
    parser.add_argument("--padded", action="store_true",
                        help="also time retain with the padded prefill (before eval.unpadded)")
    args = parser.parse_args()
    ways_timed = WAYS + ((REPEAT,) if args.repeat else ()) + ((PADDED,) if args.padded else ())
    torch.manual_seed(0)
    model, tok = load_backbone(ModelConfig(name_or_path=args.model))
    model.eval()
    stream = load_stream(DataConfig(
        stream=args.stream, data_dir=args.data_dir, max_test_per_task=args.n, valid_per_task=0
    ))
    context = model_context_length(model)
    bs = args.batch_size
    print(f"model {args.model}, stream {args.stream}, {args.n} test prompts per task, "
          f"batch {bs}, threads {torch.get_num_threads()}")
    chosen = set(args.tasks.split(",")) if args.tasks else None
    tasks = [t for t in stream.tasks if chosen is None or t.name in chosen]
    sets = {t.name: encode_eval_set(tok, t, t.test, context_length=context) for t in tasks}
    ways = {name: _ways(model, tok, data, bs) for name, data in sets.items()}
    for data in sets.values():  # warm-up
        fast_generate(model, data.prompts[:2], int(tok.pad_token_id), tok.eos_token_id,
                      data.max_new_tokens, bs, stop=data.task.stop, tokenizer=tok)
    times: dict[str, dict[str, list[Timing]]] = {n: {w: [] for w in ways_timed} for n in sets}
    outputs: dict[str, dict[str, Any]] = {n: {} for n in sets}
    for r in range(args.rounds):
        order = ways_timed if r % 2 == 0 else ways_timed[::-1]
        for name in sets:
            for way in order:
                out, t = measure(ways[name][way])
                times[name][way].append(t)
                outputs[name].setdefault(way, out)  # outputs of the first round
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    count = mismatched = 0
    gaps: list[float] = []
    print(f"{'task':<10}{'n':>4}{'new':>5}{'x 1-by-1':>10}{'x batch':>9}{'both/gen':>10}"
          f"{'mism.':>7}  (median wall-clock ratios over rounds)")
    for name, data in sets.items():
        single, ours, both = (outputs[name][w] for w in ("single", "ours", "both"))
        miss = [i for i, (a, b) in enumerate(zip(ours, single, strict=True)) if a != b]
        for i in miss:
            k = _first_difference(ours[i], single[i])
            gaps.append(_top2_gap(model, data.prompts[i], single[i][:k]))
        miss_both = sum(a != b for a, b in zip(both, ours, strict=True))
        miss_padded = (sum(a != b for a, b in zip(outputs[name][PADDED], ours, strict=True))
                       if args.padded else 0)
        count += len(data.prompts)
        mismatched += len(miss)
        t = times[name]
        print(f"{name:<10}{len(data.prompts):>4}{data.max_new_tokens:>5}"
              f"{_ratios(t['single'], t['ours']):>10}{_ratios(t['batched'], t['ours']):>9}"
              f"{_ratios(t['both'], t['ours']):>10}{len(miss):>7}"
              + (f"  (both vs retain: {miss_both} differ)" if miss_both else "")
              + (f"  (padded vs retain: {miss_padded} differ)" if miss_padded else "")
              + (f"  both-repeat/gen {_ratios(t[REPEAT], t['ours'])}" if args.repeat else "")
              + (f"  padded/unpadded {_ratios(t[PADDED], t['ours'])}" if args.padded else ""))
    total = {w: [Timing(sum(times[n][w][r].wall for n in sets),
                        sum(times[n][w][r].cpu for n in sets)) for r in range(args.rounds)]
             for w in ways_timed}
    for line in (
        *time_ratio_lines("retain vs HF per prompt (speed-up)", total["single"], total["ours"],
                          Goal(3.0, at_most=False)),
        *time_ratio_lines("retain vs HF batched (speed-up)", total["batched"], total["ours"],
                          Goal(1.3, at_most=False)),
        *time_ratio_lines("both scorers / generation alone (cost)", total["both"], total["ours"],
                          Goal(1.4)),
        *(time_ratio_lines("both, repeated-cache pass / generation alone (cost)",
                           total[REPEAT], total["ours"], Goal(1.4)) if args.repeat else ()),
        *(time_ratio_lines("retain, padded prefill vs padding-free (speed-up)",
                           total[PADDED], total["ours"], Goal(1.0, at_most=False))
          if args.padded else ()),
        *(time_ratio_lines("retain with the padded prefill vs HF per prompt (speed-up)",
                           total["single"], total[PADDED], Goal(3.0, at_most=False))
          if args.padded else ()),
    ):
        print(line)
    near = sum(g < 1e-4 for g in gaps)
    print(f"outputs differing from HF per prompt: {mismatched}/{count} "
          f"({100 * mismatched / max(count, 1):.2f} %), near-ties (top-2 logit gap < 1e-4): "
          f"{near}; gaps: {', '.join(f'{g:.1e}' for g in sorted(gaps)) or 'none'}")


if __name__ == "__main__":
    main()
