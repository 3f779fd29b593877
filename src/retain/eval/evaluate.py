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
from retain.data.normalize import generation_metric
from retain.data.task import Example, Task
from retain.eval.answers import cut_at_stop
from retain.eval.both import score_and_generate
from retain.eval.budget import _eval_fix, _resolve_context, model_context_length, prompt_room
from retain.eval.decode import fast_generate
from retain.eval.scoring import choose_option, per_byte, score_options, text_nll
from retain.eval.two_scores import (
    VALID,
    decode_budget,
    generation_scores,
    has_options,
    primary_score,
)

LoglikNorm = Literal["sum", "bytes"]

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
    max_new_tokens: int = 0
    """Greedy decode budget (`two_scores.decode_budget`); 0 for a set that never generates."""

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

    A task with options scored by both scorers also has `metrics["generate"]`,
    `metrics["loglik"]` and `metrics["valid"]` (`two_scores`), `scores` being the primary one;
    `generations` keeps the generated text of every example (empty when nothing generated).
    """

    scores: list[float]
    metrics: dict[str, list[float]]
    predictions: list[str]
    truncated_prompts: int = 0
    ties: int = 0
    generations: list[str] = field(default_factory=list)

    @property
    def score(self) -> float:
        """Mean score on 0–100, the matrix value."""
        return 100.0 * sum(self.scores) / max(len(self.scores), 1)


def score_type(task: Task, loglik_norm: LoglikNorm, score: str | None = None) -> str:
    """The score type recorded for `task` in the matrix: `accuracy_norm` when log-likelihood
    choices are byte-normalised and primary, `accuracy` when they are summed, else the metric
    of the generated answer (`score` is `eval.score`, None for the task's own protocol)."""
    if primary_score(task, score, has_options(task.test)) == "loglik":
        return "accuracy_norm" if loglik_norm == "bytes" else "accuracy"
    return generation_metric(task)


def decoding_settings(
    task: Task, loglik_norm: LoglikNorm, score: str | None = None
) -> dict[str, object]:
    """`task.decoding`, plus for a task with options the `loglik_norm` of its option score,
    its primary score and the other score it carries."""
    options = has_options(task.test)
    if not options:
        return task.decoding
    primary = primary_score(task, score, options)
    return {
        **task.decoding,
        "loglik_norm": loglik_norm,
        "options_end_with_eos": True,
        "primary": primary,
        "also": "loglik" if primary == "generate" else "generate",
        "generation_metric": generation_metric(task),
    }


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
    with_options = has_options(examples)
    options = [
        [encode_target(tokenizer, ex.prompt, o) for o in ex.options or ()] for ex in examples
    ] if with_options else []
    answers = [(ex.options or ()).index(ex.answer) for ex in examples] if with_options else []
    new_tokens = decode_budget(task, options)
    prompts, cuts = [], []
    for i, ex in enumerate(examples):
        opts = options[i] if with_options else None
        budget = prompt_room(task, opts, context, max_prompt_tokens, new_tokens)
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
    if with_options:
        return EncodedEvalSet(task, examples, prompts, options, answers, cuts, new_tokens)
    return EncodedEvalSet(task, examples, prompts, None, None, cuts, new_tokens)


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


def _both_result(
    data: EncodedEvalSet,
    scores: list[list[float]],
    texts: list[str],
    loglik_norm: LoglikNorm,
    primary: str,
) -> EvalResult:
    """Both scores of a set with options: the option result with the generation's beside it."""
    loglik = _loglik_result(data, scores, loglik_norm)
    generated, valid = generation_scores(data.task, data.examples, texts)
    assert valid is not None
    metrics = {**loglik.metrics, "loglik": loglik.scores, "generate": generated, VALID: valid}
    return EvalResult(
        scores=generated if primary == "generate" else loglik.scores,
        metrics=metrics,
        predictions=texts if primary == "generate" else loglik.predictions,
        truncated_prompts=data.truncated_prompts,
        ties=loglik.ties,
        generations=texts,
    )


def _texts(tokenizer: object, outputs: list[list[int]], stop: Sequence[str]) -> list[str]:
    texts = tokenizer.batch_decode(outputs, skip_special_tokens=True)  # type: ignore[attr-defined]
    return [cut_at_stop(t, stop) for t in texts]


def evaluate_set(
    model: torch.nn.Module,
    tokenizer: object,
    data: EncodedEvalSet,
    batch_size: int,
    *,
    loglik_norm: LoglikNorm = "bytes",
    score: str | None = None,
    both: bool = True,
) -> EvalResult:
    """Score every example of `data` with the model as it is now.

    A set with options gets both scores from one prefill per batch (`both.score_and_generate`),
    the primary one (`eval.score`, else the task's scoring) in `scores`; with `both=False` it
    gets the primary score only: log-likelihood sets skip generation (probes, general
    benchmarks). `eval.loglik_norm` names which
    log-likelihood accuracy is the option score.
    """
    if loglik_norm not in ("sum", "bytes"):
        raise ValueError(f"loglik_norm must be 'sum' or 'bytes', not {loglik_norm!r}")
    pad_id = int(tokenizer.pad_token_id)  # type: ignore[attr-defined]
    eos_id = tokenizer.eos_token_id  # type: ignore[attr-defined]
    task = data.task
    primary = primary_score(task, score, data.options is not None)
    new_tokens = data.max_new_tokens or task.max_new_tokens
    was_training = _model_mode(model)
    try:
        if data.options is not None and not both and primary == "loglik":
            scores = score_options(model, data.prompts, data.options, pad_id, batch_size)
            return _loglik_result(data, scores, loglik_norm)
        if data.options is not None:
            scores, outputs = score_and_generate(
                model, data.prompts, data.options, pad_id, eos_id, new_tokens, batch_size,
                stop=task.stop, tokenizer=tokenizer,
            )
            texts = _texts(tokenizer, outputs, task.stop)
            return _both_result(data, scores, texts, loglik_norm, primary)
        outputs = fast_generate(
            model, data.prompts, pad_id, eos_id, new_tokens, batch_size,
            stop=task.stop, tokenizer=tokenizer,
        )
        texts = _texts(tokenizer, outputs, task.stop)
        per_example, _ = generation_scores(task, data.examples, texts)
        return EvalResult(
            scores=per_example,
            metrics={task.metric: per_example},
            predictions=texts,
            truncated_prompts=data.truncated_prompts,
            generations=texts,
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
    score: str | None = None,
) -> list[float]:
    """Per-example primary scores in [0, 1] (`evaluate_set(...).scores`)."""
    return evaluate_set(
        model, tokenizer, data, batch_size, loglik_norm=loglik_norm, score=score, both=False
    ).scores


def task_score(
    model: torch.nn.Module,
    tokenizer: object,
    data: EncodedEvalSet,
    batch_size: int,
    *,
    loglik_norm: LoglikNorm = "bytes",
    score: str | None = None,
) -> float:
    """Mean primary score on 0–100 (`evaluate_set(...).score`)."""
    return evaluate_set(
        model, tokenizer, data, batch_size, loglik_norm=loglik_norm, score=score, both=False
    ).score


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
