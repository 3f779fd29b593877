"""All options of a prompt scored in one sequence after it, with a tree-shaped attention mask.

The second score of a task with a label set (the options' log-likelihoods, beside the greedy
answer) used to repeat the prompt batch's KV cache once per option and run the options at batch
size rows × options (14 options on DBpedia): a cache copy that grows with options × prompt
length, on top of the copy kept for the decode. Here each row's options are appended one after
another to its own prompt, in one forward pass at the batch's size, with a 4D attention mask
shaped like a tree: an option's token sees the row's prompt and the earlier tokens of its own
option only, and its position restarts at the prompt's length, so it is scored exactly as if it
followed the prompt alone. Afterwards the cache is cropped back to the prompt (`crop`), and the
greedy decode continues from that same cache: no copy at all.

An option's last token is predicted but predicts nothing, so it is never fed; its first token
is predicted by the prefill's last position (`first_logp`), so single-token options need no
pass at all.

Only a model that takes a custom 4D mask as given gets this path (`tree_mask_usable`); any other
keeps the repeated-cache pass (`scoring.options_from_cache`).
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from retain.eval.scoring import _quiet

MASK_ATTENTION = frozenset({"sdpa", "eager"})
"""Attention implementations that add a 4D float mask to the scores as given (flash attention
takes no mask; flex attention wants a block mask)."""

TREE_FAMILIES = frozenset({
    "llama", "mistral", "qwen2", "qwen3", "gemma", "phi3", "gpt2", "gpt_neox", "olmo2",
    "granite", "smollm3",
})
"""Model types whose position comes from `position_ids` only (rotary or learned) and whose
mask goes through transformers' `create_causal_mask`, which returns a 4D mask unchanged.
ALiBi models (Bloom, Falcon) derive positions from a 2D mask and stay on the repeated pass.
Each family is checked against one forward per prompt–option pair by the tests."""


def tree_mask_usable(model: torch.nn.Module, cache: DynamicCache) -> bool:
    """Whether `model` scores options correctly under a tree mask, from `cache`: a family in
    `TREE_FAMILIES`, an attention implementation in `MASK_ATTENTION`, and a cache of plain
    full-attention layers only (a sliding-window layer could not be cropped back exactly)."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    return (
        getattr(text, "model_type", None) in TREE_FAMILIES
        and getattr(text, "_attn_implementation", None) in MASK_ATTENTION
        and all(type(layer) is DynamicLayer for layer in cache.layers)
    )


def _layout(
    options: list[list[list[int]]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row, every option's tokens but its last, one option after another, right-padded:
    (input ids, offset of each token within its option, option index (-1 on pads), token each
    position predicts, whether the position is real), each [B, Q]."""
    rows = []
    for opts in options:
        ids: list[int] = []
        offset: list[int] = []
        which: list[int] = []
        target: list[int] = []
        for k, o in enumerate(opts):
            ids += o[:-1]
            offset += range(len(o) - 1)
            which += [k] * (len(o) - 1)
            target += o[1:]
        rows.append((ids, offset, which, target))
    width = max(len(r[0]) for r in rows)
    out = torch.zeros((4, len(rows), width), dtype=torch.long)
    out[0].fill_(pad_id)
    out[2].fill_(-1)
    for b, row in enumerate(rows):
        for field, values in enumerate(row):
            out[field, b, : len(values)] = torch.tensor(values, dtype=torch.long)
    return out[0], out[1], out[2], out[3], out[2] >= 0


def tree_mask(
    prompt_mask: torch.Tensor, which: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """The additive 4D mask [B, 1, Q, P + Q] of the options pass: a query sees the real tokens
    of its row's prompt and the tokens of its own option up to itself; a pad sees only itself
    (a query with nothing to attend to would give NaN)."""
    q = which.shape[1]
    index = torch.arange(q, device=which.device)
    # pads get ids of their own (below -1), so that they match only themselves
    group = torch.where(which >= 0, which, -2 - index)
    own = (group[:, :, None] == group[:, None, :]) & (index[:, None] >= index[None, :])
    seen = prompt_mask.bool()[:, None, :].expand(-1, q, -1)
    allowed = torch.cat([seen, own], dim=-1)[:, None]
    blocked = torch.zeros(allowed.shape, dtype=dtype, device=which.device)
    return blocked.masked_fill_(~allowed, torch.finfo(dtype).min)


def crop_to(cache: DynamicCache, length: int) -> None:
    """Drop every cache position from `length` on, in each layer (views, no copy)."""
    for layer in cache.layers:
        extra = layer.get_seq_length() - length
        if extra > 0:
            layer.crop(-extra)


@torch.no_grad()
def options_in_one_sequence(
    model: torch.nn.Module,
    cache: DynamicCache,
    mask: torch.Tensor,
    first_logp: torch.Tensor,
    options: list[list[list[int]]],
    pad_id: int,
) -> list[list[float]]:
    """Summed log-probs of each row's options (as `scoring.options_from_cache` gives them),
    continuing the prefilled `cache`, which is left as it was (cropped back to the prompt)."""
    device = mask.device
    n_opts = max(len(o) for o in options)
    firsts = torch.zeros((len(options), n_opts), dtype=torch.long)
    for row, opts in enumerate(options):
        firsts[row, : len(opts)] = torch.tensor([o[0] for o in opts], dtype=torch.long)
    flat = first_logp.gather(1, firsts.to(device))
    if max(len(o) for opts in options for o in opts) > 1:
        ids, offset, which, target, real = (t.to(device) for t in _layout(options, pad_id))
        prompt_len = cache.get_seq_length()
        start = mask.sum(-1, keepdim=True)
        dtype = next(model.parameters()).dtype
        out = _quiet(model)(
            input_ids=ids,
            attention_mask=tree_mask(mask, which, dtype),
            position_ids=start + offset,
            past_key_values=cache,
            use_cache=True,
        )
        crop_to(cache, prompt_len)
        logits = out.logits.float()
        picked = logits.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        logp = (picked - torch.logsumexp(logits, dim=-1)) * real
        slot = torch.arange(len(options), device=device)[:, None] * n_opts + which.clamp(min=0)
        flat = flat.view(-1).index_add(0, slot.view(-1), logp.view(-1)).view(len(options), n_opts)
    table = flat.tolist()
    return [table[row][: len(opts)] for row, opts in enumerate(options)]
