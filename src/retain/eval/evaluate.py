"""Evaluation of tasks: tokenised once, scored with the cached-prefix scorer or generation."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from retain.data.encoding import encode_prompt, encode_target
from retain.data.task import Example, Task
from retain.eval.answers import score_text
from retain.eval.scoring import generate, perplexity, score_options


@dataclass
class EncodedEvalSet:
    """A task's examples tokenised once and reused by every evaluation row."""

    task: Task
    examples: list[Example]
    prompts: list[list[int]]
    options: list[list[list[int]]] | None
    answer_index: list[int] | None

    @property
    def forward_passes(self) -> int:
        """Batched forward passes are counted per example row (prompt + options pass)."""
        return len(self.examples) * (1 if self.options is None else 2)


def encode_eval_set(
    tokenizer: object, task: Task, examples: list[Example], max_length: int
) -> EncodedEvalSet:
    prompts, options, answers = [], [], []
    for ex in examples:
        prompt = encode_prompt(tokenizer, ex.prompt)
        if task.scoring == "loglik":
            assert ex.options is not None
            opts = [encode_target(tokenizer, ex.prompt, o) for o in ex.options]
            room = max(1, max_length - max(len(o) for o in opts))
            options.append(opts)
            answers.append(ex.options.index(ex.answer))
        else:
            room = max(1, max_length - task.max_new_tokens)
        prompts.append(prompt[-room:])
    if task.scoring == "loglik":
        return EncodedEvalSet(task, examples, prompts, options, answers)
    return EncodedEvalSet(task, examples, prompts, None, None)


def _model_mode(model: torch.nn.Module) -> bool:
    was_training = model.training
    model.eval()
    return was_training


def example_scores(
    model: torch.nn.Module, tokenizer: object, data: EncodedEvalSet, batch_size: int
) -> list[float]:
    """Per-example scores in [0, 1] with the model as it is now."""
    pad_id = int(tokenizer.pad_token_id)  # type: ignore[attr-defined]
    was_training = _model_mode(model)
    try:
        if data.options is not None:
            assert data.answer_index is not None
            scores = score_options(model, data.prompts, data.options, pad_id, batch_size)
            return [
                float(max(range(len(s)), key=s.__getitem__) == gold)
                for s, gold in zip(scores, data.answer_index, strict=True)
            ]
        outputs = generate(
            model,
            data.prompts,
            pad_id,
            tokenizer.eos_token_id,  # type: ignore[attr-defined]
            data.task.max_new_tokens,
            batch_size,
        )
        texts = tokenizer.batch_decode(outputs, skip_special_tokens=True)  # type: ignore[attr-defined]
        return [
            score_text(data.task.metric, text, ex.answer)
            for text, ex in zip(texts, data.examples, strict=True)
        ]
    finally:
        model.train(was_training)


def task_score(
    model: torch.nn.Module, tokenizer: object, data: EncodedEvalSet, batch_size: int
) -> float:
    """Mean score on 0–100."""
    scores = example_scores(model, tokenizer, data, batch_size)
    return 100.0 * sum(scores) / max(len(scores), 1)


def text_perplexity(
    model: torch.nn.Module, tokenizer: object, texts: list[list[int]], batch_size: int
) -> float:
    pad_id = int(tokenizer.pad_token_id)  # type: ignore[attr-defined]
    was_training = _model_mode(model)
    try:
        return perplexity(model, texts, pad_id, batch_size)
    finally:
        model.train(was_training)
