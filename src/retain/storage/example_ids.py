"""Stable ids of test examples: a hash of the encoded prompt and answer.

`retain report` pairs two runs example by example only when both scored the very same examples
in the same order; counts alone cannot show that (another `data.subsample_seed` draws other
examples of the same number). The id hashes what the model was scored on, the token ids of the
prompt and of each option with the gold answer, so a changed file, tokenizer or prompt format
changes it, and it is the same in every run that saw the same example.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

ID_CHARS = 16
"""Hex characters kept of the sha256 (64 bits: no collision within any test set)."""


def example_id(prompt: Sequence[int], answer: Any, options: Sequence[Sequence[int]] | None) -> str:
    """The id of one encoded example (`answer`: the gold option's index, or the answer text)."""
    record = {
        "prompt": [int(t) for t in prompt],
        "answer": answer,
        "options": None if options is None else [[int(t) for t in o] for o in options],
    }
    data = json.dumps(record, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(data).hexdigest()[:ID_CHARS]


def eval_set_ids(data: Any) -> list[str]:
    """The ids of an encoded evaluation set, in its order; a perplexity set (token lists) is
    identified by its tokens."""
    if isinstance(data, list):
        return [example_id(ids, None, None) for ids in data]
    options = data.options
    gold = data.answer_index
    return [
        example_id(
            prompt,
            gold[i] if gold is not None else ex.answer,
            None if options is None else options[i],
        )
        for i, (prompt, ex) in enumerate(zip(data.prompts, data.examples, strict=True))
    ]


def evaluator_ids(evaluator: Any) -> dict[str, list[str]]:
    """The example ids of every task and general set of a `RowEvaluator`, by name."""
    out = {data.task.name: eval_set_ids(data) for data in evaluator.task_sets}
    out.update({name: eval_set_ids(data) for name, data in evaluator.general.items()})
    return out
