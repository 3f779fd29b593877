"""Generation speed: retain's greedy evaluation against Hugging Face `generate`, and both scorers
against generation alone, on the test prompts of a real stream.

Same model, same prompts, same stopping (EOS, the task's stop strings, `max_new_tokens` from the
longest label), measured side by side in one process, per task and in total:
- HF per prompt: `model.generate` one prompt at a time,
- HF batched: `scoring.generate`, batched and length-sorted (evaluation's path before),
- retain: `decode.fast_generate`, rows leaving the batch at EOS/stop, the cell's common prompt
  prefix prefilled once,
- both: `both.score_and_generate`, the greedy answer and every option's log-likelihood from one
  prefill per batch.
Outputs of retain are compared with HF per prompt; each mismatch is shown with the gap between
the two top logits where the two first differ (a near-tie when < 1e-4).

    nice -n 5 .venv/bin/python benchmarks/generation.py [--stream olora-standard-1] [--n 50]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch

from retain.config import DataConfig, ModelConfig
from retain.data.streams import load_stream
from retain.eval.both import score_and_generate
from retain.eval.decode import fast_generate
from retain.eval.evaluate import encode_eval_set, model_context_length
from retain.eval.scoring import generate
from retain.models.loading import load_backbone


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


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


def _measure(
    model: torch.nn.Module, tok: Any, data: Any, bs: int
) -> tuple[list[list[int]], list[list[int]], list[list[int]], tuple[float, ...]]:
    """(HF per-prompt outputs, retain's, both scorers', (seconds of the four ways))."""
    pad, eos = int(tok.pad_token_id), tok.eos_token_id
    new, stop, prompts = data.max_new_tokens, data.task.stop, data.prompts
    fast_generate(model, prompts[:2], pad, eos, new, bs, stop=stop, tokenizer=tok)  # warm-up
    single, t_single = _timed(lambda: [
        generate(model, [p], pad, eos, new, 1, stop=stop, tokenizer=tok)[0] for p in prompts
    ])
    _, t_batched = _timed(lambda: generate(
        model, prompts, pad, eos, new, bs, stop=stop, tokenizer=tok))
    ours, t_ours = _timed(lambda: fast_generate(
        model, prompts, pad, eos, new, bs, stop=stop, tokenizer=tok))
    (_, both_out), t_both = _timed(lambda: score_and_generate(
        model, prompts, data.options, pad, eos, new, bs, stop=stop, tokenizer=tok))
    return single, ours, both_out, (t_single, t_batched, t_ours, t_both)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--stream", default="olora-standard-1")
    parser.add_argument("--n", type=int, default=50, help="test prompts per task")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--tasks", default="", help="comma-separated task names (default: all)")
    args = parser.parse_args()
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
    head = f"{'task':<10}{'n':>4}{'new':>5}{'HF 1-by-1':>11}{'HF batch':>10}{'retain':>9}" \
           f"{'both':>8}{'x 1-by-1':>10}{'x batch':>9}{'both/gen':>10}{'mism.':>7}"
    print(head)
    total = dict.fromkeys(("single", "batched", "ours", "both"), 0.0)
    count = mismatched = 0
    gaps: list[float] = []
    chosen = set(args.tasks.split(",")) if args.tasks else None
    for task in stream.tasks:
        if chosen is not None and task.name not in chosen:
            continue
        data = encode_eval_set(tok, task, task.test, context_length=context)
        assert data.options is not None
        new, prompts = data.max_new_tokens, data.prompts
        single, ours, both_out, times = _measure(model, tok, data, bs)
        t_single, t_batched, t_ours, t_both = times
        miss = [i for i, (a, b) in enumerate(zip(ours, single, strict=True)) if a != b]
        miss_both = sum(a != b for a, b in zip(both_out, ours, strict=True))
        for i in miss:
            k = _first_difference(ours[i], single[i])
            gaps.append(_top2_gap(model, prompts[i], single[i][:k]))
        count += len(prompts)
        mismatched += len(miss)
        for key, t in (("single", t_single), ("batched", t_batched), ("ours", t_ours),
                       ("both", t_both)):
            total[key] += t
        print(f"{task.name:<10}{len(prompts):>4}{new:>5}{t_single:>10.1f}s{t_batched:>9.1f}s"
              f"{t_ours:>8.1f}s{t_both:>7.1f}s{t_single / t_ours:>9.2f}x{t_batched / t_ours:>8.2f}x"
              f"{t_both / t_ours:>9.2f}x{len(miss):>7}"
              + (f"  (both vs retain: {miss_both} differ)" if miss_both else ""))
    t = total
    print(f"{'total':<10}{count:>4}{'':>5}{t['single']:>10.1f}s{t['batched']:>9.1f}s"
          f"{t['ours']:>8.1f}s{t['both']:>7.1f}s{t['single'] / t['ours']:>9.2f}x"
          f"{t['batched'] / t['ours']:>8.2f}x{t['both'] / t['ours']:>9.2f}x{mismatched:>7}")
    print(f"retain vs HF per prompt: {t['single'] / t['ours']:.2f}x (target >= 3); vs HF batched: "
          f"{t['batched'] / t['ours']:.2f}x (target >= 1.3); both scorers / generation alone: "
          f"{t['both'] / t['ours']:.2f} (target <= 1.4)")
    near = sum(g < 1e-4 for g in gaps)
    print(f"outputs differing from HF per prompt: {mismatched}/{count} "
          f"({100 * mismatched / max(count, 1):.2f} %), near-ties (top-2 logit gap < 1e-4): "
          f"{near}; gaps: {', '.join(f'{g:.1e}' for g in sorted(gaps)) or 'none'}")


if __name__ == "__main__":
    main()
