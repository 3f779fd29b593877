"""Padding-free prefill: a batch's prompts prefilled in groups of (nearly) equal length, their
caches then assembled into the one left-padded cache that a padded prefill leaves.

On a CPU the prefill is compute-bound and dominates evaluation (prompts of 100–180 tokens, about
7 new tokens), so every pad of a left-padded batch costs as much as a real token, while the
decode gains from batching. Here the rows of a batch are split into groups, each prefilled
padded to its own longest row only, and the caches are joined back, the pads filled with zeros
and masked, into [prefix | pad | rest] as `prefix.prefill_rows` lays it out: the option pass and
the batched greedy decode run on it unchanged.

The rule (`plan_groups`): rows sorted by length are cut into contiguous groups minimising
`groups × forward_cost + Σ rows × longest row` in tokens, `forward_cost` being the fixed cost of a
forward pass in token-equivalents. With a high cost this is one group (the padded prefill); with
a cost near 0 it is one group per distinct length (no pad at all). On a CPU, `CPU_FORWARD_COST`
(measured on SmolLM2-135M, one thread); on other devices one group, since there a batch's rows
run in parallel and a pad costs little next to a kernel launch. `RETAIN_PREFILL=padded` or
`unpadded` overrides the rule (for benchmarks timing both: `benchmarks/generation.py --padded`;
on olora-standard-1, 16 prompts per task, one CPU thread, greedy evaluation ran 2.1× faster).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

CPU_FORWARD_COST = 32.0
"""A forward pass's fixed cost on a CPU, in prefilled tokens. SmolLM2-135M, one thread, loaded
machine: a prefill forward of T tokens in all (1 row of 8–192, 4 × 128, 16 × 8) took about
130 ms + 3.9 ms · T, i.e. the weights read once per forward cost ≈ 33 tokens."""

MODE_ENV = "RETAIN_PREFILL"
"""`padded`: always one padded forward per batch; `unpadded`: one group per distinct length;
unset: the rule above."""


def forward_cost(model: torch.nn.Module) -> float:
    """The per-forward cost `plan_groups` weighs pads against (inf: one padded forward)."""
    mode = os.environ.get(MODE_ENV, "")
    if mode not in ("", "padded", "unpadded"):
        raise ValueError(f"{MODE_ENV}={mode!r}: expected 'padded', 'unpadded' or unset")
    if mode == "padded" or not _full_attention_cache(model):
        return float("inf")
    if mode == "unpadded":
        return 0.0
    on_cpu = next(model.parameters()).device.type == "cpu"
    return CPU_FORWARD_COST if on_cpu else float("inf")


def _full_attention_cache(model: torch.nn.Module) -> bool:
    """Whether the model's cache keeps every position (a sliding-window layer drops old ones,
    so its cache cannot be re-padded)."""
    layers = DynamicCache(config=getattr(model, "config", None)).layers
    return all(type(layer) is DynamicLayer for layer in layers)


def plan_groups(lengths: Sequence[int], cost: float) -> list[list[int]]:
    """Indices of `lengths` cut into groups prefilled one forward each: contiguous runs of the
    rows sorted by length (longest first), minimising `len(groups) * cost + Σ rows × longest`."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    if cost == float("inf") or len(order) < 2:
        return [order] if order else []
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[j]: cheapest split of order[:j]
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):  # last group order[i:j], padded to its first (longest) row
            total = best[i] + cost + (j - i) * lengths[order[i]]
            if total < best[j]:
                best[j], cut[j] = total, i
    groups: list[list[int]] = []
    j = n
    while j > 0:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


def assemble(
    caches: Sequence[DynamicCache],
    groups: Sequence[Sequence[int]],
    prefix_length: int,
    width: int,
    model: torch.nn.Module,
) -> DynamicCache:
    """One cache of `sum(len(g))` rows, row `groups[k][r]` taken from row r of `caches[k]`, each
    group's rest re-padded on the left (zeros, to be masked) to `width` after the prefix."""
    order = [i for g in groups for i in g]
    device = caches[0].layers[0].keys.device
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    inverse = inverse.to(device)
    layers = []
    for per_group in zip(*(c.layers for c in caches), strict=True):
        joined = []
        for kind in ("keys", "values"):
            parts = []
            for layer in per_group:
                t = getattr(layer, kind)
                pad = width - (t.shape[2] - prefix_length)
                zeros = t.new_zeros(t.shape[0], t.shape[1], pad, t.shape[3])
                head, rest = t[:, :, :prefix_length], t[:, :, prefix_length:]
                parts.append(torch.cat([head, zeros, rest], dim=2))
            joined.append(torch.cat(parts).index_select(0, inverse))
        layers.append((joined[0], joined[1]))
    return DynamicCache(layers, config=getattr(model, "config", None))
