"""Which rows one optimizer step trains on, for any number of processes.

A step is planned globally: every process draws the same global micro-batches (per-process
batch × number of processes rows each), lets the plugins compose them (replay rows, in plugin
order) with identical generators, and then keeps its own slice. So N processes with batch b
train on exactly the rows one process with batch N·b would, replay keeps its global fraction,
ranks never draw the same buffer row, and every rank's plugin state stays identical.

Plugins that fill a fixed number of rows of every global batch (GeRe's `per_batch` mixing)
reserve them: the task order then yields one group of B − k task rows per step, the plugin
completes it to B rows (`compose_step`), and only then is it cut into micro-batches. Without
such a plugin the planner draws micro-batches exactly as before.
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
    """Answer tokens of the step's task rows (all micro-batches, all ranks): their loss divides
    by it."""
    tokens: int
    samples: int
    replayed: int
    general_rows: int = 0
    """Rows of general text (`task_of` -1, GeRe): a loss group of their own (train/step.py)."""
    general_tokens: int = 0
    """Loss tokens of the general rows (tokens 2..L of each)."""

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
        step_composers: list[Plugin] | None = None,
        micro_rows: int | None = None,
    ) -> None:
        """With `step_composers`, `order` yields one group of task rows per step and each
        global micro-batch has `micro_rows` rows (per-process batch × processes)."""
        self.store, self.order, self.composers, self.ctx = store, order, composers, ctx
        self.grad_accum = grad_accum
        self.step_composers = step_composers or []
        self.micro_rows = micro_rows or order.batch_size

    def _micro_plans(self, step: int) -> list[BatchPlan]:
        if not self.step_composers:
            out = []
            for m in range(self.grad_accum):
                ids = self.order.batch(step * self.grad_accum + m)
                out.append(BatchPlan(ids, [False] * len(ids)))
            return out
        ids = self.order.batch(step)
        whole = BatchPlan(ids, [False] * len(ids))
        rows = self.micro_rows * self.grad_accum
        for plugin in self.step_composers:
            whole = plugin.compose_step(self.ctx, whole, rows)
        if len(whole.sample_ids) != rows:
            raise RuntimeError(f"a step was composed to {len(whole.sample_ids)} rows, not {rows}")
        b = self.micro_rows
        return [
            BatchPlan(whole.sample_ids[m * b : (m + 1) * b], whole.is_replay[m * b : (m + 1) * b])
            for m in range(self.grad_accum)
        ]

    def plan(self, step: int) -> StepPlan:
        plans = []
        for plan in self._micro_plans(step):
            for plugin in self.composers:
                plan = plugin.compose_batch(self.ctx, plan)
            plans.append(plan)
        rows = [i for p in plans for i in p.sample_ids]
        store = self.store
        general = [i for i in rows if store.task_of[i] < 0]
        return StepPlan(
            plans=plans,
            loss_tokens=sum(store.loss_tokens[i] for i in rows if store.task_of[i] >= 0),
            tokens=sum(len(store.input_ids[i]) for i in rows),
            samples=len(rows),
            replayed=sum(sum(p.is_replay) for p in plans),
            general_rows=len(general),
            general_tokens=sum(store.loss_tokens[i] for i in general),
        )



def task_planner(
    store: SampleStore,
    pool: list[int],
    seed: int,
    task_index: int,
    ctx: Context,
    micro_rows: int,
    grad_accum: int,
    composers: list[Plugin],
    step_composers: list[Plugin],
    reserved: int,
) -> StepPlanner:
    """The planner of one task: micro-batches of `micro_rows` global rows drawn from the task
    order, or, when plugins reserve rows of each step, one group of B − reserved task rows per
    step that those plugins complete to B = micro_rows × grad_accum."""
    if not (step_composers and reserved):
        order = TaskOrder(pool, seed, task_index, micro_rows)
        return StepPlanner(store, order, composers, ctx, grad_accum)
    group = micro_rows * grad_accum - reserved
    if group < 1:
        raise ValueError(
            f"plugins reserve {reserved} rows of every global batch of {micro_rows * grad_accum}"
            " rows, leaving none for the task; raise train.batch_size or train.grad_accum"
        )
    order = TaskOrder(pool, seed, task_index, group)
    return StepPlanner(store, order, composers, ctx, grad_accum, step_composers, micro_rows)
