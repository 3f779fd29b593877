"""Evaluation of tasks: tokenised once, scored with the cached-prefix scorer or generation.

Evaluation has its own prompt budget, independent of `data.max_length` (which is for training):
`eval.max_prompt_tokens`, or by default the model's context length minus the generation budget
(`max_new_tokens` for generated answers, the longest option for log-likelihood). A prompt over
budget loses the end of its declared passage only (`encoding.fit_prompt`); one that cannot fit
that way is refused before anything runs (`check_prompt_budgets`, or `encode_eval_set` itself).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from retain.data.encoding import (
    PromptBudgetError,
    encode_target,
    encode_train_example,
    fit_prompt,
)
from retain.data.task import Example, Task
from retain.eval.answers import cut_at_stop, score_text
from retain.eval.scoring import choose_option, generate, per_byte, score_options, text_nll

LoglikNorm = Literal["sum", "bytes"]

_SANE_CONTEXT = 1_000_000
"""Tokenizers without a known limit report a huge `model_max_length` (1e30); it is ignored."""


@dataclass
class EncodedEvalSet:
    """A task's examples tokenised once and reused by every evaluation row.

    `prompt_cut[i]` is how many passage tokens example i lost to the prompt budget.
    """

    task: Task
    examples: list[Example]
    prompts: list[list[int]]
    options: list[list[list[int]]] | None
    answer_index: list[int] | None
    prompt_cut: list[int] = field(default_factory=list)

    @property
    def truncated_prompts(self) -> int:
        return sum(1 for c in self.prompt_cut if c > 0)

    @property
    def forward_passes(self) -> int:
        """Batched forward passes are counted per example row (prompt + options pass)."""
        return len(self.examples) * (1 if self.options is None else 2)


@dataclass
class EvalResult:
    """Per-example results of one evaluated set, in example order.

    `scores` are the ones the score matrix uses, in [0, 1]; `metrics` holds every per-example
    metric (`accuracy` and `accuracy_norm` for log-likelihood tasks, the task's metric for
    generated answers); `predictions` the chosen option or the generated text (cut at stop
    strings); `ties` how many examples had options tied for best (first one chosen).
    """

    scores: list[float]
    metrics: dict[str, list[float]]
    predictions: list[str]
    truncated_prompts: int = 0
    ties: int = 0

    @property
    def score(self) -> float:
        """Mean score on 0–100, the matrix value."""
        return 100.0 * sum(self.scores) / max(len(self.scores), 1)


def score_type(task: Task, loglik_norm: LoglikNorm) -> str:
    """The score type recorded for `task` in the matrix: `accuracy_norm` when log-likelihood
    choices are byte-normalised, else the task's metric."""
    return "accuracy_norm" if task.scoring == "loglik" and loglik_norm == "bytes" else task.metric


def decoding_settings(task: Task, loglik_norm: LoglikNorm) -> dict[str, object]:
    """`task.decoding`, plus the `loglik_norm` a log-likelihood task's matrix score uses."""
    if task.scoring == "loglik":
        return {**task.decoding, "loglik_norm": loglik_norm, "options_end_with_eos": True}
    return task.decoding


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
) -> int:
    """The evaluation prompt budget of one example: `max_prompt_tokens` if set, never more than
    the context leaves after the generation budget (longest option, or `max_new_tokens`)."""
    generation = max(len(o) for o in option_ids) if option_ids else task.max_new_tokens
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


def encode_eval_set(
    tokenizer: object,
    task: Task,
    examples: list[Example],
    max_length: int | None = None,
    *,
    context_length: int | None = None,
    max_prompt_tokens: int | None = None,
    split: str = "test",
) -> EncodedEvalSet:
    """Tokenise `examples` of `task` for evaluation within the prompt budget (module docstring).

    `max_length` is accepted for old call sites and used as the context length only when
    neither `context_length` nor the tokenizer gives one. Raises `PromptBudgetError` naming the
    task, `split` and record for a prompt that cannot fit without losing its instruction.
    """
    context = _resolve_context(tokenizer, context_length, max_length)
    prompts, options, answers, cuts = [], [], [], []
    for i, ex in enumerate(examples):
        opts = None
        if task.scoring == "loglik":
            assert ex.options is not None
            opts = [encode_target(tokenizer, ex.prompt, o) for o in ex.options]
            options.append(opts)
            answers.append(ex.options.index(ex.answer))
        budget = prompt_room(task, opts, context, max_prompt_tokens)
        fitted = fit_prompt(
            tokenizer,
            ex,
            budget,
            task=task.name,
            split=split,
            index=i,
            fix=_eval_fix(task, context, budget, max_prompt_tokens),
        )
        prompts.append(fitted.ids)
        cuts.append(fitted.cut)
    if task.scoring == "loglik":
        return EncodedEvalSet(task, examples, prompts, options, answers, cuts)
    return EncodedEvalSet(task, examples, prompts, None, None, cuts)


def check_prompt_budgets(
    tokenizer: object,
    tasks: Sequence[Task],
    *,
    max_length: int,
    context_length: int,
    max_prompt_tokens: int | None = None,
) -> dict[str, dict[str, int]]:
    """Refuse, before any training, a task whose prompts cannot fit their room.

    Training examples (`train`) get `max_length` minus their answer; evaluated ones (`valid`
    for probes, `test`) the evaluation budget. Raises `PromptBudgetError` on the first prompt
    whose instruction, question or cue alone exceeds its room (or training answer that leaves
    none); returns, per task and split, how many prompts will be truncated.
    """
    counts: dict[str, dict[str, int]] = {}
    for task in tasks:
        train = sum(
            encode_train_example(tokenizer, ex, max_length, task=task.name, index=i).truncated
            for i, ex in enumerate(task.train)
        )
        counts[task.name] = {"train": train}
        for split, examples in (("valid", task.valid), ("test", task.test)):
            data = encode_eval_set(
                tokenizer,
                task,
                examples,
                context_length=context_length,
                max_prompt_tokens=max_prompt_tokens,
                split=split,
            )
            counts[task.name][split] = data.truncated_prompts
    return counts


def _model_mode(model: torch.nn.Module) -> bool:
    was_training = model.training
    model.eval()
    return was_training


def _loglik_result(
    data: EncodedEvalSet, scores: list[list[float]], loglik_norm: LoglikNorm
) -> EvalResult:
    assert data.answer_index is not None
    accuracy, accuracy_norm, predictions, ties, invalid = [], [], [], 0, 0
    for ex, row, gold in zip(data.examples, scores, data.answer_index, strict=True):
        assert ex.options is not None
        by_sum, tie_sum = choose_option(row)
        by_bytes, tie_bytes = choose_option(per_byte(row, ex.options))
        accuracy.append(float(by_sum == gold))
        accuracy_norm.append(float(by_bytes == gold))
        chosen, tied = (by_bytes, tie_bytes) if loglik_norm == "bytes" else (by_sum, tie_sum)
        predictions.append(ex.options[chosen] if chosen >= 0 else "")
        ties += tied
        invalid += chosen < 0
    if invalid:  # recorded as wrong answers, and said
        print(f"warning: task {data.task.name}: {invalid} of {len(scores)} examples have no "
              "finite option score (the model produces NaN); they count as wrong answers",
              file=sys.stderr)
    return EvalResult(
        scores=accuracy_norm if loglik_norm == "bytes" else accuracy,
        metrics={"accuracy": accuracy, "accuracy_norm": accuracy_norm},
        predictions=predictions,
        truncated_prompts=data.truncated_prompts,
        ties=ties,
    )


def evaluate_set(
    model: torch.nn.Module,
    tokenizer: object,
    data: EncodedEvalSet,
    batch_size: int,
    *,
    loglik_norm: LoglikNorm = "bytes",
) -> EvalResult:
    """Score every example of `data` with the model as it is now (`eval.loglik_norm` names
    which log-likelihood accuracy becomes `scores`)."""
    if loglik_norm not in ("sum", "bytes"):
        raise ValueError(f"loglik_norm must be 'sum' or 'bytes', not {loglik_norm!r}")
    pad_id = int(tokenizer.pad_token_id)  # type: ignore[attr-defined]
    was_training = _model_mode(model)
    try:
        if data.options is not None:
            scores = score_options(model, data.prompts, data.options, pad_id, batch_size)
            return _loglik_result(data, scores, loglik_norm)
        task = data.task
        outputs = generate(
            model,
            data.prompts,
            pad_id,
            tokenizer.eos_token_id,  # type: ignore[attr-defined]
            task.max_new_tokens,
            batch_size,
            stop=task.stop,
            tokenizer=tokenizer,
        )
        texts = tokenizer.batch_decode(outputs, skip_special_tokens=True)  # type: ignore[attr-defined]
        texts = [cut_at_stop(t, task.stop) for t in texts]
        per_example = [
            score_text(task.metric, text, ex.answer, source=ex.source_text)
            for text, ex in zip(texts, data.examples, strict=True)
        ]
        return EvalResult(
            scores=per_example,
            metrics={task.metric: per_example},
            predictions=texts,
            truncated_prompts=data.truncated_prompts,
        )
    finally:
        model.train(was_training)


def example_scores(
    model: torch.nn.Module,
    tokenizer: object,
    data: EncodedEvalSet,
    batch_size: int,
    *,
    loglik_norm: LoglikNorm = "bytes",
) -> list[float]:
    """Per-example scores in [0, 1] (`evaluate_set(...).scores`)."""
    return evaluate_set(model, tokenizer, data, batch_size, loglik_norm=loglik_norm).scores


def task_score(
    model: torch.nn.Module,
    tokenizer: object,
    data: EncodedEvalSet,
    batch_size: int,
    *,
    loglik_norm: LoglikNorm = "bytes",
) -> float:
    """Mean score on 0–100 (`evaluate_set(...).score`)."""
    return evaluate_set(model, tokenizer, data, batch_size, loglik_norm=loglik_norm).score


def text_perplexity(
    model: torch.nn.Module, tokenizer: object, texts: list[list[int]], batch_size: int
) -> float:
    nll_sums, counts = text_nll_parts(model, tokenizer, texts, batch_size)
    return math.exp(sum(nll_sums) / max(sum(counts), 1))


def text_nll_parts(
    model: torch.nn.Module, tokenizer: object, texts: list[list[int]], batch_size: int
) -> tuple[list[float], list[int]]:
    """Per-text NLL sums and token counts in eval mode (see `scoring.text_nll`)."""
    pad_id = int(tokenizer.pad_token_id)  # type: ignore[attr-defined]
    was_training = _model_mode(model)
    try:
        return text_nll(model, texts, pad_id, batch_size)
    finally:
        model.train(was_training)


__all__ = [
    "EncodedEvalSet",
    "EvalResult",
    "PromptBudgetError",
    "check_prompt_budgets",
    "decoding_settings",
    "encode_eval_set",
    "evaluate_set",
    "example_scores",
    "model_context_length",
    "prompt_room",
    "score_type",
    "task_score",
    "text_nll_parts",
    "text_perplexity",
]
