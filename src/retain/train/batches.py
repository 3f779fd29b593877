"""Which rows one optimizer step trains on, for any number of processes.

A step is planned globally: every process draws the same global micro-batches (per-process
batch × number of processes rows each), lets the plugins compose them (replay rows, in plugin
order) with identical generators, and then keeps its own slice. So N processes with batch b
train on exactly the rows one process with batch N·b would, replay keeps its global fraction,
ranks never draw the same buffer row, and every rank's plugin state stays identical.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retain.data.encoding import BatchPlan, SampleStore
from retain.methods.base import Context, Plugin


class TaskOrder:
    """The deterministic sequence of training samples of one task: seeded epoch permutations.

    Micro-batch k is a pure function of (seed, task, k), so a resumed run draws exactly the
    batches the uninterrupted run would have drawn.
    """

    def __init__(self, pool: list[int], seed: int, task_index: int, batch_size: int) -> None:
        self.pool = np.asarray(pool, dtype=np.int64)
        self.seed, self.task_index, self.batch_size = seed, task_index, batch_size
        self._cached: tuple[int, np.ndarray] | None = None

    def _epoch(self, e: int) -> np.ndarray:
        """The permutation of epoch e (the last one is kept: batches walk epochs in order)."""
        if self._cached is None or self._cached[0] != e:
            rng = np.random.default_rng([self.seed, self.task_index, e])
            self._cached = (e, self.pool[rng.permutation(len(self.pool))])
        return self._cached[1]

    def batch(self, k: int) -> list[int]:
        n = len(self.pool)
        start = k * self.batch_size
        return [int(self._epoch((start + j) // n)[(start + j) % n]) for j in range(self.batch_size)]


@dataclass
class StepPlan:
    """The global micro-batch plans of one step and what they cost, known on every rank."""

    plans: list[BatchPlan]
    loss_tokens: int
    """Answer tokens of the whole step (all micro-batches, all ranks): the loss divides by it."""
    tokens: int
    samples: int
    replayed: int

    def local(self, rank: int, world: int) -> list[BatchPlan]:
        """This rank's contiguous slice of every global micro-batch."""
        out = []
        for plan in self.plans:
            size = len(plan.sample_ids)
            if size % world:
                raise ValueError(f"a planned batch of {size} rows cannot be split over {world}")
            b = size // world
            rows = slice(rank * b, (rank + 1) * b)
            out.append(BatchPlan(plan.sample_ids[rows], plan.is_replay[rows]))
        return out


class StepPlanner:
    """Plans the steps of one task: global batch = per-process batch × processes."""

    def __init__(
        self,
        store: SampleStore,
        order: TaskOrder,
        composers: list[Plugin],
        ctx: Context,
        grad_accum: int,
    ) -> None:
        self.store, self.order, self.composers, self.ctx = store, order, composers, ctx
        self.grad_accum = grad_accum

    def plan(self, step: int) -> StepPlan:
        plans = []
        for m in range(self.grad_accum):
            ids = self.order.batch(step * self.grad_accum + m)
            plan = BatchPlan(ids, [False] * len(ids))
            for plugin in self.composers:
                plan = plugin.compose_batch(self.ctx, plan)
            plans.append(plan)
        rows = [i for p in plans for i in p.sample_ids]
        return StepPlan(
            plans=plans,
            loss_tokens=sum(self.store.loss_tokens[i] for i in rows),
            tokens=sum(len(self.store.input_ids[i]) for i in rows),
            samples=len(rows),
            replayed=sum(sum(p.is_replay) for p in plans),
        )

