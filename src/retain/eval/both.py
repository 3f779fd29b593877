"""Both scorers from one prefill: the greedy answer and the options' log-likelihoods.

A task with a label set is scored two ways (generation and option log-likelihood, see
`evaluate.evaluate_set`). Both start from the same prompt, so each prompt batch is prefilled
once. The options of each row are then scored in one sequence appended to it under a tree mask
(`option_tree.options_in_one_sequence`), the cache is cropped back to the prompt, and the greedy
decode continues from that same cache (`decode.greedy_from_cache`): no cache is copied, and the
second score costs one forward pass over the option tokens at the batch's size. A model that does
not take a custom 4D mask (`option_tree.tree_mask_usable`) gets the repeated-cache pass instead:
the cache is copied for the decode and the other copy repeated once per option
(`scoring.options_from_cache`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from retain.eval.decode import greedy_from_cache
from retain.eval.option_tree import options_in_one_sequence, tree_mask_usable
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
    tree: bool = True,
) -> tuple[list[list[float]], list[list[int]]]:
    """(summed option log-probs as `scoring.score_options` gives them, greedy new tokens as
    `decode.fast_generate` gives them), from one prefill per batch of prompts (after the
    prompts' common prefix, computed once: `prefix.shared_prefix`). `tree=False` forces the
    repeated-cache pass (for tests and benchmarks comparing the two)."""
    scores: list[list[float]] = [[] for _ in prompts]
    outputs: list[list[int]] = [[] for _ in prompts]
    prefix = shared_prefix(model, prompts)
    for batch in length_sorted_batches([len(p) for p in prompts], batch_size):
        rows = [prompts[i] for i in batch]
        cache, mask, first_logp = prefill_rows(model, rows, pad_id, prefix)
        chosen = [options[i] for i in batch]
        if tree and tree_mask_usable(model, cache):
            scored = options_in_one_sequence(model, cache, mask, first_logp, chosen, pad_id)
            decode_cache = cache
        else:
            decode_cache = copy.deepcopy(cache)
            scored = options_from_cache(model, cache, mask, first_logp, chosen, pad_id)
        new = greedy_from_cache(
            model, decode_cache, mask, first_logp, eos_id, max_new_tokens,
            stop=stop, tokenizer=tokenizer,
        )
        for row, i in enumerate(batch):
            scores[i], outputs[i] = scored[row], new[row]
    return scores, outputs
