"""A cell's shared prompt prefix, computed once and reused by every batch.

The prompts of a task often open alike: in the O-LoRA tasks the instruction and the option list
are 7–60 % of a prompt. Their common token prefix is run through the model once per evaluated
cell (the weights change between cells, so never across them); each batch's cache then starts
from that cache broadcast to its rows (one copy per batch, the shared cache is never copied) and
prefills only the rest of each prompt. The rest is left-padded *after* the prefix ([prefix | pad
| rest]): the pads are masked out and positions continue from the prefix, so every row's last
real token is the batch's last position, as `scoring.prefill` leaves it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from retain.eval.scoring import _left_pad, next_token_logp, prefill
from retain.eval.unpadded import assemble, forward_cost, plan_groups

MIN_PREFIX = 8
"""Shorter common prefixes are not worth a separate forward pass."""

DISABLE_ENV = "RETAIN_NO_SHARED_PREFIX"
"""Set to 1 to prefill whole prompts (for benchmarks comparing the two)."""


def common_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt starts with, leaving each at least one token of its own (the last
    token's logits start the answer)."""
    if not prompts:
        return 0
    first, limit = prompts[0], min(len(p) for p in prompts) - 1
    n = 0
    while n < limit and all(p[n] == first[n] for p in prompts):
        n += 1
    return n


@dataclass
class SharedPrefix:
    """The KV cache of the common prefix (batch of 1) and its length in tokens."""

    cache: DynamicCache
    length: int


@torch.no_grad()
def shared_prefix(model: torch.nn.Module, prompts: Sequence[Sequence[int]]) -> SharedPrefix | None:
    """The cell's prefix cache, or None when the prefix is too short to pay, when there is a
    single prompt (nothing to share it with), or when disabled."""
    if os.environ.get(DISABLE_ENV) == "1" or len(prompts) < 2:
        return None
    n = common_prefix_length(prompts)
    if n < MIN_PREFIX:
        return None
    cache, _, _ = prefill(model, [list(prompts[0][:n])], pad_id=0)
    return SharedPrefix(cache, n)


@torch.no_grad()
def prefill_rows(
    model: torch.nn.Module, rows: list[list[int]], pad_id: int, prefix: SharedPrefix | None
) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:
    """`scoring.prefill` of `rows`, starting from `prefix` when given (rows must begin with it):
    (cache, attention mask over prefix + rest, next-token log-probs [B, V]).

    The rests are prefilled in the groups `unpadded.plan_groups` chooses (one padded forward
    on a GPU; on a CPU, rows of equal or near-equal length together) and the caches assembled
    into the one left-padded batch cache a single padded forward leaves."""
    start = 0 if prefix is None else prefix.length
    groups = plan_groups([len(r) - start for r in rows], forward_cost(model))
    if len(groups) <= 1:
        return _prefill_padded(model, rows, pad_id, prefix)
    parts = [_prefill_padded(model, [rows[i] for i in g], pad_id, prefix) for g in groups]
    device = next(model.parameters()).device
    _, mask, _ = _left_pad([r[start:] for r in rows], pad_id, device)
    if start:
        mask = torch.cat([torch.ones_like(mask[:, :1]).expand(-1, start), mask], dim=1)
    cache = assemble([p[0] for p in parts], groups, start, mask.shape[1] - start, model)
    joined = torch.cat([p[2] for p in parts])  # rows in group order
    logp = torch.empty_like(joined)
    logp[torch.tensor([i for g in groups for i in g], device=joined.device)] = joined
    return cache, mask, logp


def _prefill_padded(
    model: torch.nn.Module, rows: list[list[int]], pad_id: int, prefix: SharedPrefix | None
) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:
    """One forward over the rows' rests, left-padded after the prefix."""
    if prefix is None:
        return prefill(model, rows, pad_id)
    device = next(model.parameters()).device
    ids, rest_mask, _ = _left_pad([r[prefix.length :] for r in rows], pad_id, device)
    n = len(rows)
    shared = [(layer.keys.expand(n, -1, -1, -1), layer.values.expand(n, -1, -1, -1))
              for layer in prefix.cache.layers]
    cache = DynamicCache(shared, config=getattr(model, "config", None))
    ones = torch.ones((len(rows), prefix.length), dtype=rest_mask.dtype, device=device)
    mask = torch.cat([ones, rest_mask], dim=1)
    positions = prefix.length + (rest_mask.cumsum(-1) - 1).clamp(min=0)
    return cache, mask, next_token_logp(model, ids, mask, positions, cache)
