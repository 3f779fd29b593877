"""One evaluation row: every task of the stream and the general suite, with the model as it is.

The loop calls this after every task (and once before the first); the sets are tokenised once
at start-up and reused by every row, so a row costs only the forward passes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from retain.config_sections import CoreConfig
from retain.data.task import TaskStream
from retain.eval.evaluate import (
    EncodedEvalSet,
    EvalResult,
    encode_eval_set,
    evaluate_set,
    text_nll_parts,
)
from retain.eval.sharding import Shards, interleave, merge_results, shard_set
from retain.progress import progress


@dataclass
class RowScores:
    """What one row measured: task scores and general columns (0–100; perplexity raw)."""

    scores: dict[str, float]
    general: dict[str, float]
    seconds: float
    examples: dict[str, EvalResult] = field(default_factory=dict)
    """Per-example results of every scored task and general benchmark, in example order."""
    perplexity_parts: dict[str, tuple[list[float], list[int]]] = field(default_factory=dict)
    """Per-text (NLL sums, token counts) of each perplexity column."""


def general_suite(
    config: CoreConfig, tokenizer: object, context_length: int | None
) -> dict[str, Any]:
    """The general-ability sets (MMLU, ARC-Easy, WikiText-2 paragraphs), when enabled."""
    cfg = config.eval.general
    if not cfg.enabled:
        return {}
    from retain.data.general import arc_easy_subset, mmlu_subset, wikitext_paragraphs

    data_dir = config.data.data_dir
    suite: dict[str, Any] = {}
    max_len = config.data.max_length
    budget = {"context_length": context_length, "max_prompt_tokens": config.eval.max_prompt_tokens}
    if cfg.mmlu_per_subject:
        task = mmlu_subset(data_dir, cfg.mmlu_per_subject, cfg.mmlu_subjects)
        suite["mmlu"] = encode_eval_set(tokenizer, task, task.test, **budget)
    if cfg.arc_easy:
        task = arc_easy_subset(data_dir, cfg.arc_easy)
        suite["arc_easy"] = encode_eval_set(tokenizer, task, task.test, **budget)
    if cfg.wikitext_paragraphs:
        texts = wikitext_paragraphs(data_dir, cfg.wikitext_paragraphs)
        suite["wikitext_ppl"] = [
            tokenizer(t, add_special_tokens=False)["input_ids"][:max_len]  # type: ignore[operator]
            for t in texts
        ]
    return suite


class RowEvaluator:
    """The tokenised evaluation sets of a run and the scoring of one row."""

    def __init__(
        self,
        config: CoreConfig,
        stream: TaskStream,
        tokenizer: object,
        context_length: int | None = None,
    ) -> None:
        """`context_length`: the model's positions; prompts get it minus the answer's budget
        (or `eval.max_prompt_tokens`), and only a declared passage is ever cut to fit."""
        self.config = config
        self.tokenizer = tokenizer
        self.task_sets: list[EncodedEvalSet] = [
            encode_eval_set(
                tokenizer,
                t,
                t.test,
                context_length=context_length,
                max_prompt_tokens=config.eval.max_prompt_tokens,
            )
            for t in stream.tasks
        ]
        self.general = general_suite(config, tokenizer, context_length)

    @property
    def truncated_prompts(self) -> dict[str, int]:
        """Test prompts whose passage was shortened to fit, per task."""
        return {data.task.name: data.truncated_prompts for data in self.task_sets}

    @property
    def general_names(self) -> list[str]:
        return list(self.general)

    def evaluate(
        self,
        model: torch.nn.Module,
        stage: int,
        tasks: list[int] | None = None,
        shards: Shards | None = None,
        with_general: bool = True,
    ) -> RowScores:
        """Scores of the tasks with indices `tasks` (default: all) and, unless `with_general`
        is False, the general suite; with `shards`, this process scores its share of every set
        and gets all results."""
        shards = shards or Shards()
        start = time.perf_counter()
        bs = self.config.eval.batch_size
        chosen = self.task_sets if tasks is None else [self.task_sets[i] for i in tasks]
        norm = self.config.eval.loglik_norm
        score = self.config.eval.score
        examples: dict[str, EvalResult] = {}
        bar = progress(len(chosen), f"eval stage {stage}", self.config.train.progress, lines=1)

        def scored(data: EncodedEvalSet, both: bool = True) -> EvalResult:
            mine = shard_set(data, shards)
            part = evaluate_set(
                model, self.tokenizer, mine, bs, loglik_norm=norm, score=score, both=both
            )
            return merge_results(shards.all_parts(part), data)

        for data in chosen:
            examples[data.task.name] = scored(data)
            bar.update(1)
        bar.close()
        general = {}
        parts: dict[str, tuple[list[float], list[int]]] = {}
        for name, data in (self.general if with_general else {}).items():
            if name.endswith("_ppl"):
                mine = [data[i] for i in shards.indices(len(data))]
                every = shards.all_parts(text_nll_parts(model, self.tokenizer, mine, bs))
                nll = interleave([e[0] for e in every], len(data))
                counts = interleave([e[1] for e in every], len(data))
                parts[name] = (nll, counts)
                general[name] = math.exp(sum(nll) / max(sum(counts), 1))
            else:
                examples[name] = scored(data, both=False)  # general ability: options only
                general[name] = examples[name].score
        scores = {d.task.name: examples[d.task.name].score for d in chosen}
        return RowScores(scores, general, time.perf_counter() - start, examples, parts)
