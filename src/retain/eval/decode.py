"""Greedy decoding from a prefilled KV cache, with finished rows leaving the batch.

Hugging Face `generate` keeps a finished row in the batch (it pads it) until every row is done,
so one long answer makes the whole batch pay for it. Here a row leaves the batch (its cache rows
are dropped) as soon as it emits EOS or its text contains a stop string, and the batch ends when
no row is left or `max_new_tokens` is reached. The decode starts from a cache that
`scoring.prefill` made, so the same prefill can also serve log-likelihood scoring of options
(`both.score_and_generate`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache

from retain.eval.scoring import _quiet, length_sorted_batches


def _stopped(tokenizer: object, tokens: list[int], stop: Sequence[str]) -> bool:
    """Whether the decoded new tokens contain a stop string (the text is cut there later)."""
    text = tokenizer.decode(tokens, skip_special_tokens=True)  # type: ignore[attr-defined]
    return any(s in text for s in stop)


@torch.no_grad()
def greedy_from_cache(
    model: torch.nn.Module,
    cache: DynamicCache,
    mask: torch.Tensor,
    first_logp: torch.Tensor,
    eos_id: int | None,
    max_new_tokens: int,
    *,
    stop: Sequence[str] = (),
    tokenizer: object | None = None,
) -> list[list[int]]:
    """The greedy continuation of every row of a prefilled batch, without its EOS.

    `cache`, `mask` and `first_logp` come from `scoring.prefill` (the cache is consumed). With
    `stop`, a row ends once its decoded text contains a stop string (whose tokens are kept, as
    `scoring.generate` keeps them: callers cut the text with `answers.cut_at_stop`).
    """
    if stop and tokenizer is None:
        raise ValueError("greedy_from_cache: stop strings need the tokenizer")
    out: list[list[int]] = [[] for _ in range(mask.shape[0])]
    if max_new_tokens <= 0:
        return out
    device = mask.device
    alive = torch.arange(mask.shape[0], device=device)
    positions = mask.sum(-1, keepdim=True)  # next position of each row
    logp = first_logp
    for step in range(max_new_tokens):
        token = logp.argmax(-1)  # [alive]
        keep: list[int] = []
        for row, (i, t) in enumerate(zip(alive.tolist(), token.tolist(), strict=True)):
            if eos_id is not None and t == eos_id:
                continue
            out[i].append(t)
            if stop and _stopped(tokenizer, out[i], stop):
                continue
            keep.append(row)
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(alive):
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            alive, mask, token = alive[index], mask[index], token[index]
            positions = positions[index]
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        result = _quiet(model)(
            input_ids=token.unsqueeze(-1),
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
        )
        positions = positions + 1
        logp = result.logits[:, -1].float()  # argmax only: no softmax needed
    return out


@torch.no_grad()
def fast_generate(
    model: torch.nn.Module,
    prompts: list[list[int]],
    pad_id: int,
    eos_id: int | None,
    max_new_tokens: int,
    batch_size: int = 16,
    *,
    stop: Sequence[str] = (),
    tokenizer: object | None = None,
) -> list[list[int]]:
    """`scoring.generate`'s result (greedy, new tokens up to EOS) with finished rows leaving the
    batch; batches are length-sorted as there, and the prompts' common prefix is computed once
    (`prefix.shared_prefix`)."""
    from retain.eval.prefix import prefill_rows, shared_prefix

    results: list[list[int]] = [[] for _ in prompts]
    prefix = shared_prefix(model, prompts)
    for batch in length_sorted_batches([len(p) for p in prompts], batch_size):
        cache, mask, first_logp = prefill_rows(model, [prompts[i] for i in batch], pad_id, prefix)
        new = greedy_from_cache(
            model, cache, mask, first_logp, eos_id, max_new_tokens, stop=stop, tokenizer=tokenizer
        )
        for row, i in enumerate(batch):
            results[i] = new[row]
    return results
