"""The evaluation prompt budget: the model's context minus the answer's room.

Kept apart from `evaluate` (which re-exports `model_context_length` and `prompt_room`).
"""

from __future__ import annotations

from collections.abc import Sequence

from retain.data.task import Task

_SANE_CONTEXT = 1_000_000
"""Tokenizers without a known limit report a huge `model_max_length` (1e30); it is ignored."""


def model_context_length(model: object) -> int | None:
    """The model's maximum number of positions, from its config; None if it does not say."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _resolve_context(tokenizer: object, context_length: int | None, max_length: int | None) -> int:
    """`context_length`, else the tokenizer's own limit, else (old call sites) `max_length`."""
    if context_length is not None:
        return context_length
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _SANE_CONTEXT:
        return limit
    if max_length is not None:
        return max_length
    raise ValueError(
        "encode_eval_set: the model's context length is unknown; pass context_length "
        "(model_context_length(model)) or set eval.max_prompt_tokens"
    )


def prompt_room(
    task: Task,
    option_ids: Sequence[Sequence[int]] | None,
    context_length: int,
    max_prompt_tokens: int | None = None,
    new_tokens: int | None = None,
) -> int:
    """The evaluation prompt budget of one example: `max_prompt_tokens` if set, never more than
    the context leaves after the answer's budget: the longest option or the decode budget
    (`new_tokens`, default the task's `max_new_tokens`), whichever is longer."""
    decode = task.max_new_tokens if new_tokens is None else new_tokens
    generation = max([decode, *(len(o) for o in option_ids or ())])
    room = context_length - generation
    return room if max_prompt_tokens is None else min(max_prompt_tokens, room)


def _eval_fix(task: Task, context: int, budget: int, max_prompt_tokens: int | None) -> str:
    """What to change when an evaluation prompt cannot fit `budget`."""
    if max_prompt_tokens is not None and budget == max_prompt_tokens:
        return f"raise eval.max_prompt_tokens (now {max_prompt_tokens})"
    answer = (
        "the longest option"
        if task.scoring == "loglik"
        else f"max_new_tokens (lower data.max_new_tokens, now {task.max_new_tokens})"
    )
    return (
        f"the context length of {context} tokens leaves {budget} for the prompt after "
        f"{context - budget} for {answer}; use a model with a longer context "
        "(eval.max_prompt_tokens can only lower the budget)"
    )
