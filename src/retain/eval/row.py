"""One evaluation row: every task of the stream and the general suite, with the model as it is.

The loop calls this after every task (and once before the first); the sets are tokenised once
at start-up and reused by every row, so a row costs only the forward passes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from retain.config import RunConfig
from retain.data.task import TaskStream
from retain.eval.evaluate import EncodedEvalSet, encode_eval_set, task_score, text_perplexity


@dataclass
class RowScores:
    """What one row measured: task scores and general columns (0–100; perplexity raw)."""

    scores: dict[str, float]
    general: dict[str, float]
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)


def general_suite(config: RunConfig, tokenizer: object) -> dict[str, Any]:
    """The general-ability sets (MMLU, ARC-Easy, WikiText-2 paragraphs), when enabled."""
    cfg = config.eval.general
    if not cfg.enabled:
        return {}
    from retain.data.general import arc_easy_subset, mmlu_subset, wikitext_paragraphs

    data_dir = config.data.data_dir
    suite: dict[str, Any] = {}
    max_len = config.data.max_length
    if cfg.mmlu_per_subject:
        task = mmlu_subset(data_dir, cfg.mmlu_per_subject, cfg.mmlu_subjects)
        suite["mmlu"] = encode_eval_set(tokenizer, task, task.test, max_len)
    if cfg.arc_easy:
        task = arc_easy_subset(data_dir, cfg.arc_easy)
        suite["arc_easy"] = encode_eval_set(tokenizer, task, task.test, max_len)
    if cfg.wikitext_paragraphs:
        texts = wikitext_paragraphs(data_dir, cfg.wikitext_paragraphs)
        suite["wikitext_ppl"] = [
            tokenizer(t, add_special_tokens=False)["input_ids"][:max_len]  # type: ignore[operator]
            for t in texts
        ]
    return suite


class RowEvaluator:
    """The tokenised evaluation sets of a run and the scoring of one row."""

    def __init__(self, config: RunConfig, stream: TaskStream, tokenizer: object) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.task_sets: list[EncodedEvalSet] = [
            encode_eval_set(tokenizer, t, t.test, config.data.max_length) for t in stream.tasks
        ]
        self.general = general_suite(config, tokenizer)

    @property
    def general_names(self) -> list[str]:
        return list(self.general)

    def evaluate(
        self, model: torch.nn.Module, stage: int, tasks: list[int] | None = None
    ) -> RowScores:
        """Scores of the tasks with indices `tasks` (default: all) and the general suite."""
        start = time.perf_counter()
        bs = self.config.eval.batch_size
        chosen = self.task_sets if tasks is None else [self.task_sets[i] for i in tasks]
        scores = {
            data.task.name: task_score(model, self.tokenizer, data, bs)
            for data in tqdm(
                chosen,
                desc=f"eval stage {stage}",
                leave=False,
                disable=not self.config.train.progress,
            )
        }
        general = {}
        for name, data in self.general.items():
            if name.endswith("_ppl"):
                general[name] = text_perplexity(model, self.tokenizer, data, bs)
            else:
                general[name] = task_score(model, self.tokenizer, data, bs)
        return RowScores(scores, general, time.perf_counter() - start)
