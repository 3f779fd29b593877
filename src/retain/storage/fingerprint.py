"""The data fingerprint of a run: what its numbers were computed on, in hashes and names.

Two runs are comparable (a `gap_closed` reference, a resume) only when they saw the same encoded
stream: the tokenised training samples, the tokenised evaluation sets, the model and the seed.
Hashing the encoded tokens, not the config, catches what a config cannot show: a data file that
changed on disk, another tokenizer, another prompt format or truncation rule.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from collections.abc import Iterable, Sequence
from typing import Any

FINGERPRINT_FILE = "fingerprint.json"
VERSION = 1

PART_NAMES: dict[str, str] = {
    "stream": "the task stream",
    "model": "the model",
    "seed": "the seed",
    "subsample": "the subsampling of the data",
    "train_data": "the tokenised training samples",
    "test_data": "the tokenised evaluation sets",
    "general_data": "the tokenised general-ability sets",
}
"""Every part of a fingerprint, with the words an error message uses for it."""

REFERENCE_PARTS: tuple[str, ...] = (
    "stream",
    "model",
    "seed",
    "subsample",
    "train_data",
    "test_data",
)
"""What a gap_closed reference must share with the run (general columns do not enter `ap`)."""

_SUBSAMPLE_KEYS = (
    "max_train_per_task",
    "max_test_per_task",
    "valid_per_task",
    "num_tasks",
    "subsample_seed",
)


def _update_ints(h: Any, seq: Sequence[int] | None) -> None:
    """Length-prefixed, so [1, 2] + [3] and [1] + [2, 3] hash apart; None apart from []."""
    if seq is None:
        h.update(b"\xff" * 8)
        return
    h.update(len(seq).to_bytes(8, "little"))
    h.update(array("q", seq).tobytes())


def _update_text(h: Any, text: object) -> None:
    data = json.dumps(text, sort_keys=True, default=str).encode()
    h.update(len(data).to_bytes(8, "little"))
    h.update(data)


def hash_training_data(store: Any, pools: Iterable[Sequence[int]]) -> str:
    """The tokenised training samples of each task (input ids and loss labels), pool by pool."""
    h = hashlib.sha256()
    for pool in pools:
        h.update(b"pool")
        _update_ints(h, list(pool))
        for i in pool:
            _update_ints(h, store.input_ids[i])
            _update_ints(h, store.labels[i])
    return h.hexdigest()


def _task_rule(task: Any) -> dict[str, Any]:
    keys = ("name", "scoring", "metric", "max_new_tokens")
    return {k: getattr(task, k, None) for k in keys}


def hash_eval_sets(sets: Iterable[Any]) -> str:
    """Tokenised prompts and options, gold answers and scoring rule of each evaluation set."""
    h = hashlib.sha256()
    for data in sets:
        if isinstance(data, list):  # perplexity texts: token lists
            h.update(b"texts")
            for ids in data:
                _update_ints(h, ids)
            continue
        _update_text(h, _task_rule(data.task))
        _update_text(h, [ex.answer for ex in data.examples])
        _update_text(h, getattr(data, "answer_index", None))
        for prompt in data.prompts:
            _update_ints(h, prompt)
        options = getattr(data, "options", None)
        if options is None:
            h.update(b"no-options")
        else:
            for opts in options:
                h.update(len(opts).to_bytes(8, "little"))
                for o in opts:
                    _update_ints(h, o)
    return h.hexdigest()


def data_fingerprint(
    config: Any,
    store: Any,
    pools: Sequence[Sequence[int]],
    task_sets: Sequence[Any],
    general: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The fingerprint of a run: named parts, their digest, and the run's methods (not hashed:
    a reference is found by method, compared by data)."""
    parts: dict[str, Any] = {
        "stream": {"name": config.data.stream, "tasks": [s.task.name for s in task_sets]},
        "model": config.model.name_or_path,
        "seed": config.seed,
        "subsample": {k: getattr(config.data, k) for k in _SUBSAMPLE_KEYS},
        "train_data": hash_training_data(store, pools),
        "test_data": hash_eval_sets(task_sets),
        "general_data": hash_eval_sets((general or {}).values()),
    }
    budgets = {s.task.name: _budget(s.task) for s in task_sets}
    if any(budgets.values()):  # a stream file's per-task steps/lr change what is trained
        parts["task_budgets"] = budgets
    return {
        "version": VERSION,
        "digest": _digest(parts),
        "parts": parts,
        "methods": list(config.methods),
    }


def _budget(task: Any) -> dict[str, Any]:
    """The per-task settings a stream file gave (None values left out)."""
    budget = getattr(task, "budget", None)
    if budget is None:
        return {}
    return {k: v for k, v in vars(budget).items() if v is not None}


def _digest(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if not isinstance(value, str) else repr(value)


def fingerprint_differences(
    old: dict[str, Any], new: dict[str, Any], parts: Sequence[str] | None = None
) -> list[str]:
    """What differs between two fingerprints, in words; [] when they match on `parts`."""
    a, b = old.get("parts", {}), new.get("parts", {})
    diffs = []
    for name in parts or PART_NAMES:
        x, y = a.get(name), b.get(name)
        if x == y:
            continue
        words = PART_NAMES.get(name, name)
        if name.endswith("_data"):
            diffs.append(f"{words} differ")
        else:
            diffs.append(f"{words} ({name}: {_show(x)} → {_show(y)})")
    return diffs
