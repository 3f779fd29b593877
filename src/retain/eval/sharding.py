"""Evaluation split over processes: each rank scores every N-th example, results are gathered
back into example order on every rank, so N processes evaluate about N times faster and the
score matrix is the one a single process would write."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from retain.eval.evaluate import EncodedEvalSet, EvalResult

T = TypeVar("T")


@dataclass(frozen=True)
class Shards:
    """This process's place among `world` processes; `gather` returns one object per rank
    (in rank order) on every rank, e.g. `accelerate.utils.gather_object` of a one-item list."""

    rank: int = 0
    world: int = 1
    gather: Callable[[Any], list[Any]] | None = None

    def indices(self, n: int) -> list[int]:
        return list(range(self.rank, n, self.world))

    def all_parts(self, part: T) -> list[T]:
        if self.world == 1:
            return [part]
        assert self.gather is not None, "several processes need a gather function"
        return list(self.gather(part))


def shard_set(data: EncodedEvalSet, shards: Shards) -> EncodedEvalSet:
    """Examples rank, rank + N, rank + 2N, ... of `data`."""
    idx = shards.indices(len(data.examples))

    def pick(values: list[Any] | None) -> list[Any] | None:
        return None if values is None else [values[i] for i in idx]

    return replace(
        data,
        examples=[data.examples[i] for i in idx],
        prompts=[data.prompts[i] for i in idx],
        options=pick(data.options),
        answer_index=pick(data.answer_index),
        prompt_cut=[data.prompt_cut[i] for i in idx] if data.prompt_cut else [],
    )


def interleave(parts: list[list[T]], n: int) -> list[T]:
    """Undo the strided split: item i came from part i % N at position i // N."""
    world = len(parts)
    return [parts[i % world][i // world] for i in range(n)]


def merge_results(parts: list[EvalResult], full: EncodedEvalSet) -> EvalResult:
    """One `EvalResult` in example order from the ranks' results on their shards."""
    n = len(full.examples)
    names = parts[0].metrics.keys()
    return EvalResult(
        scores=interleave([p.scores for p in parts], n),
        metrics={k: interleave([p.metrics[k] for p in parts], n) for k in names},
        predictions=interleave([p.predictions for p in parts], n),
        truncated_prompts=full.truncated_prompts,
        ties=sum(p.ties for p in parts),
        generations=interleave([p.generations for p in parts], n) if parts[0].generations else [],
    )
