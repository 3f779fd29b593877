"""Both scorers from one prefill: the greedy answer and the options' log-likelihoods.

A task with a label set is scored two ways (generation and option log-likelihood, see
`evaluate.evaluate_set`). Both start from the same prompt, so each prompt batch is prefilled
once: the cache is copied, one copy is repeated per option and scored (`scoring.
options_from_cache`), the other is decoded greedily (`decode.greedy_from_cache`). The second
score then costs the option pass only, not another pass over the prompts.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from retain.eval.decode import greedy_from_cache
from retain.eval.prefix import prefill_rows, shared_prefix
from retain.eval.scoring import length_sorted_batches, options_from_cache


@torch.no_grad()
def score_and_generate(
    model: torch.nn.Module,
    prompts: list[list[int]],
    options: list[list[list[int]]],
    pad_id: int,
    eos_id: int | None,
    max_new_tokens: int,
    batch_size: int = 16,
    *,
    stop: Sequence[str] = (),
    tokenizer: object | None = None,
) -> tuple[list[list[float]], list[list[int]]]:
    """(summed option log-probs as `scoring.score_options` gives them, greedy new tokens as
    `decode.fast_generate` gives them), from one prefill per batch of prompts (after the
    prompts' common prefix, computed once: `prefix.shared_prefix`)."""
    scores: list[list[float]] = [[] for _ in prompts]
    outputs: list[list[int]] = [[] for _ in prompts]
    prefix = shared_prefix(model, prompts)
    for batch in length_sorted_batches([len(p) for p in prompts], batch_size):
        rows = [prompts[i] for i in batch]
        cache, mask, first_logp = prefill_rows(model, rows, pad_id, prefix)
        decode_cache = copy.deepcopy(cache)
        scored = options_from_cache(
            model, cache, mask, first_logp, [options[i] for i in batch], pad_id
        )
        new = greedy_from_cache(
            model, decode_cache, mask, first_logp, eos_id, max_new_tokens,
            stop=stop, tokenizer=tokenizer,
        )
        for row, i in enumerate(batch):
            scores[i], outputs[i] = scored[row], new[row]
    return scores, outputs
