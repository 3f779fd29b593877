"""Fast scoring: log-likelihood of answer options from a cached prompt prefix, and batched greedy
generation.

Evaluation runs after every task on every task, so its cost grows with the square of the stream
length. Each prompt is encoded once: the prompt batch runs with the KV cache on and only its last
position goes through the LM head, then all options of all prompts are scored in one more
forward pass over the repeated cache. Single-token options need no second pass at all.

Log-likelihood choice, as `evaluate.evaluate_set` applies it. Options are scored with EOS
appended (`encoding.encode_target`), so that an option is not credited for being a prefix of a
longer one ("Sci" inside "Sci/Tech"); the EOS log-prob is part of the sum. Two scores are
reported per example: `accuracy`, the argmax of the summed log-prob (which favours short
options), and `accuracy_norm`, the argmax of the sum divided by the UTF-8 byte length of the
option text alone (no leading space, no EOS), as common evaluation harnesses do. Ties (scores
within `TIE_TOL` of the best) go to the first option in listed order and are counted.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from transformers import DynamicCache

TIE_TOL = 1e-6
"""Scores this close (relative, or absolute near 0) count as equal: below float32 noise."""


def per_byte(scores: Sequence[float], options: Sequence[str]) -> list[float]:
    """Summed log-probs divided by each option's UTF-8 byte length (at least 1)."""
    return [s / max(1, len(o.encode("utf-8"))) for s, o in zip(scores, options, strict=True)]


def choose_option(scores: Sequence[float]) -> tuple[int, bool]:
    """The chosen option (the first of those tied for best) and whether there was a tie.

    A NaN score is never chosen; when no score is finite nothing is: (-1, False), an invalid
    answer the caller records as wrong (a model that produces NaN must not crash evaluation)."""
    finite = [s for s in scores if not math.isnan(s)]
    if not finite:
        return -1, False
    best = max(finite)
    tied = [
        k for k, s in enumerate(scores) if math.isclose(s, best, rel_tol=TIE_TOL, abs_tol=TIE_TOL)
    ]
    return tied[0], len(tied) > 1


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices grouped into batches of similar length (longest first), to waste little padding."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def _left_pad(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


CACHE_RENAMED = "`past_key_values` is deprecated"
"""transformers ≥ 5.2x renamed the argument to `cache`; earlier 5.x releases know only the old
name, which every 5.x accepts, so we keep it and silence the rename notice."""


def _quiet(model: torch.nn.Module) -> Any:
    """`model` called with the deprecation notice of `past_key_values` silenced."""

    def call(**kwargs: Any) -> Any:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=CACHE_RENAMED, category=FutureWarning)
            return model(**kwargs)

    return call


def prefill(
    model: torch.nn.Module, rows: list[list[int]], pad_id: int
) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:
    """One forward over left-padded `rows` with the KV cache on: (cache, attention mask,
    log-probs of the next token [B, V]); only the last position goes through the LM head."""
    device = next(model.parameters()).device
    ids, mask, positions = _left_pad(rows, pad_id, device)
    cache = DynamicCache(config=getattr(model, "config", None))
    return cache, mask, next_token_logp(model, ids, mask, positions, cache)


def next_token_logp(
    model: torch.nn.Module,
    ids: torch.Tensor,
    mask: torch.Tensor,
    positions: torch.Tensor,
    cache: DynamicCache,
) -> torch.Tensor:
    """Run `ids` into `cache` (filled in place); log-probs of the next token [B, V], only the
    last position through the LM head."""
    out = _quiet(model)(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    return F.log_softmax(out.logits[:, -1].float(), dim=-1)


def options_from_cache(
    model: torch.nn.Module,
    cache: DynamicCache,
    mask: torch.Tensor,
    first_logp: torch.Tensor,
    options: list[list[list[int]]],
    pad_id: int,
) -> list[list[float]]:
    """Summed log-probs of each row's options, continuing a prefilled `cache` (which is
    consumed: it is repeated once per option). Single-token options need no forward pass."""
    device = mask.device
    n_opts = max(len(o) for o in options)
    opt_len = max(len(o) for opts in options for o in opts)
    if opt_len == 1:
        return [[float(first_logp[row, o[0]]) for o in opts] for row, opts in enumerate(options)]
    # One row per (prompt, option); prompts with fewer options repeat their first one.
    opt_ids = torch.full((len(options) * n_opts, opt_len), pad_id, dtype=torch.long)
    opt_mask = torch.zeros_like(opt_ids)
    for row, opts in enumerate(options):
        for k in range(n_opts):
            o = opts[k] if k < len(opts) else opts[0]
            opt_ids[row * n_opts + k, : len(o)] = torch.tensor(o)
            opt_mask[row * n_opts + k, : len(o)] = 1
    opt_ids, opt_mask = opt_ids.to(device), opt_mask.to(device)
    cache.batch_repeat_interleave(n_opts)
    prompt_mask = mask.repeat_interleave(n_opts, dim=0)
    start = prompt_mask.sum(-1, keepdim=True)
    opt_positions = start + torch.arange(opt_len, device=device).unsqueeze(0)
    out = _quiet(model)(
        input_ids=opt_ids,
        attention_mask=torch.cat([prompt_mask, opt_mask], dim=1),
        position_ids=opt_positions,
        past_key_values=cache,
        use_cache=True,
    )
    logp = F.log_softmax(out.logits[:, :-1].float(), dim=-1)  # predicts tokens 1..L-1
    rest = logp.gather(-1, opt_ids[:, 1:].unsqueeze(-1)).squeeze(-1) * opt_mask[:, 1:]
    first = first_logp.repeat_interleave(n_opts, dim=0).gather(1, opt_ids[:, :1]).squeeze(1)
    totals = (first + rest.sum(-1)).view(len(options), n_opts)
    return [totals[row, : len(opts)].tolist() for row, opts in enumerate(options)]


@torch.no_grad()
def score_options(
    model: torch.nn.Module,
    prompts: list[list[int]],
    options: list[list[list[int]]],
    pad_id: int,
    batch_size: int = 16,
) -> list[list[float]]:
    """Sum of log-probabilities of each option's tokens given its prompt.

    `prompts[i]` are token ids; `options[i][k]` the ids of option k of prompt i (non-empty).
    """
    results: list[list[float]] = [[] for _ in prompts]
    for batch in length_sorted_batches([len(p) for p in prompts], batch_size):
        cache, mask, first_logp = prefill(model, [prompts[i] for i in batch], pad_id)
        scored = options_from_cache(
            model, cache, mask, first_logp, [options[i] for i in batch], pad_id
        )
        for row, i in enumerate(batch):
            results[i] = scored[row]
    return results


@torch.no_grad()
def score_options_reference(
    model: torch.nn.Module,
    prompts: list[list[int]],
    options: list[list[list[int]]],
) -> list[list[float]]:
    """The naive way evaluation harnesses commonly score: one full forward per prompt–option
    pair. Kept as the ground truth for tests and as the baseline of `benchmarks/scoring.py`."""
    device = next(model.parameters()).device
    results = []
    for prompt, opts in zip(prompts, options, strict=True):
        scores = []
        for o in opts:
            ids = torch.tensor([prompt + o], device=device)
            logp = F.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
            targets = ids[0, len(prompt) :]
            scores.append(float(logp[len(prompt) - 1 :].gather(1, targets[:, None]).sum()))
        results.append(scores)
    return results


@torch.no_grad()
def generate(
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
    """Greedy batched generation with the KV cache; returns the new tokens up to EOS.

    With `stop`, transformers' own stop-string criterion (which needs the `tokenizer`) ends a
    row once its text ends in a stop string; the stop string's tokens are still returned, so
    callers cut the decoded text (`answers.cut_at_stop`).
    """
    if stop and tokenizer is None:
        raise ValueError("generate: stop strings need the tokenizer")
    extra: dict[str, object] = {"stop_strings": list(stop), "tokenizer": tokenizer} if stop else {}
    device = next(model.parameters()).device
    results: list[list[int]] = [[] for _ in prompts]
    for batch in length_sorted_batches([len(p) for p in prompts], batch_size):
        ids, mask, _ = _left_pad([prompts[i] for i in batch], pad_id, device)
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad_id,
            eos_token_id=eos_id,
            **extra,
        )
        new = out[:, ids.shape[1] :].tolist()
        for row, i in enumerate(batch):
            tokens = new[row]
            if eos_id is not None and eos_id in tokens:
                tokens = tokens[: tokens.index(eos_id)]
            results[i] = tokens
    return results


@torch.no_grad()
def text_nll(
    model: torch.nn.Module, texts: list[list[int]], pad_id: int, batch_size: int = 8
) -> tuple[list[float], list[int]]:
    """Per text: summed NLL of every token after the first, and how many tokens that is
    (kept per text so that perplexity can be bootstrapped over texts as a ratio)."""
    device = next(model.parameters()).device
    nll_sums, counts = [0.0] * len(texts), [0] * len(texts)
    for batch in length_sorted_batches([len(t) for t in texts], batch_size):
        chosen = [i for i in batch if len(texts[i]) > 1]
        if not chosen:
            continue
        width = max(len(texts[i]) for i in chosen)
        ids = torch.full((len(chosen), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, i in enumerate(chosen):
            ids[r, : len(texts[i])] = torch.tensor(texts[i])
            mask[r, : len(texts[i])] = 1
        ids, mask = ids.to(device), mask.to(device)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        nll = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        row_nll = (nll * mask[:, 1:]).sum(-1).tolist()
        row_tokens = mask[:, 1:].sum(-1).tolist()
        for r, i in enumerate(chosen):
            nll_sums[i], counts[i] = float(row_nll[r]), int(row_tokens[r])
    return nll_sums, counts


def perplexity(
    model: torch.nn.Module, texts: list[list[int]], pad_id: int, batch_size: int = 8
) -> float:
    """Token-level perplexity over texts (every token after the first is predicted)."""
    nll_sums, counts = text_nll(model, texts, pad_id, batch_size)
    return math.exp(sum(nll_sums) / max(sum(counts), 1))
