"""The replay buffer: samples of finished tasks, held by global sample id.

The buffer stores ids only (the tokenised rows live in the `SampleStore`), so filling, eviction
and sampling are index operations on small integer arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def equal_quotas(capacity: int, available: Sequence[int]) -> list[int]:
    """Equal share of `capacity` per task, never more than a task has (the paper: equal quota).

    Decision: water-filling — a task with fewer samples than its share keeps all of them and the
    spare room is shared by the others; the remainder of an uneven split goes to the earliest
    tasks, one sample each, so quotas are deterministic.
    """
    quotas = [0] * len(available)
    remaining = sorted(range(len(available)), key=lambda i: (available[i], i))
    room = capacity
    while remaining:
        share = room // len(remaining)
        smallest = remaining[0]
        if available[smallest] <= share:
            quotas[smallest] = available[smallest]
            room -= available[smallest]
            remaining.pop(0)
            continue
        extra = room - share * len(remaining)
        for rank, i in enumerate(sorted(remaining)):
            quotas[i] = share + (1 if rank < extra else 0)
        break
    return quotas


def draw_positions(
    n: int, rng: np.random.Generator, weights: np.ndarray | None, allowed: np.ndarray
) -> np.ndarray:
    """`n` distinct positions among `allowed` (bool mask), uniformly or with given weights.

    Weighted draws use NumPy's successive sampling without replacement (each pick ∝ weight among
    those left), the natural reading of "draw p ∝ w without replacement".
    """
    candidates = np.flatnonzero(allowed)
    if n <= 0:
        return np.empty(0, dtype=np.int64)
    if n > candidates.size:
        raise ValueError(f"cannot draw {n} distinct samples from {candidates.size}")
    if weights is None:
        return rng.choice(candidates, size=n, replace=False)
    w = np.asarray(weights, dtype=np.float64)[candidates]
    return rng.choice(candidates, size=n, replace=False, p=w / w.sum())


class ReplayBuffer:
    """Samples of finished tasks with equal quotas per task and seeded random fill/eviction.

    Within a replay event samples are drawn without replacement; `start_event` begins a new
    event (so draws are with replacement across events, as docs/methods/replay.md says).
    Decision: if an event needs more rows than are still undrawn, the event starts a fresh
    pass over the buffer.
    """

    def __init__(self, capacity: int, seed: int | Sequence[int]) -> None:
        self.capacity = capacity
        self.rng = np.random.default_rng(seed)
        self.by_task: dict[int, np.ndarray] = {}
        self._ids = np.empty(0, dtype=np.int64)
        self._task_of = np.empty(0, dtype=np.int64)
        self._drawn = np.zeros(0, dtype=bool)

    def __len__(self) -> int:
        return int(self._ids.size)

    @property
    def ids(self) -> np.ndarray:
        """Global ids of all held samples, grouped by task in task order (positions index it)."""
        return self._ids

    @property
    def task_of(self) -> np.ndarray:
        return self._task_of

    def quotas(self) -> dict[int, int]:
        return {t: int(v.size) for t, v in self.by_task.items()}

    def add_task(self, task: int, sample_ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Admit a finished task: shrink older tasks to the new equal quota, then fill.

        Returns (added ids, evicted ids). Evicted and admitted samples are chosen at random
        (seeded); the order of kept samples is preserved so the buffer is reproducible.
        """
        pool = np.unique(np.asarray(sample_ids, dtype=np.int64))
        tasks = sorted(set(self.by_task) | {task})
        available = [int(pool.size) if t == task else int(self.by_task[t].size) for t in tasks]
        quotas = dict(zip(tasks, equal_quotas(self.capacity, available), strict=True))
        evicted: list[np.ndarray] = []
        for t in tasks:
            if t == task:
                continue
            held = self.by_task[t]
            if quotas[t] < held.size:
                keep = np.sort(self.rng.choice(held.size, size=quotas[t], replace=False))
                mask = np.zeros(held.size, dtype=bool)
                mask[keep] = True
                evicted.append(held[~mask])
                self.by_task[t] = held[mask]
        chosen = np.sort(self.rng.choice(pool, size=quotas[task], replace=False))
        self.by_task[task] = chosen
        self._rebuild()
        gone = np.concatenate(evicted) if evicted else np.empty(0, dtype=np.int64)
        return chosen, gone

    def _rebuild(self) -> None:
        tasks = sorted(self.by_task)
        parts = [self.by_task[t] for t in tasks]
        self._ids = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
        self._task_of = (
            np.concatenate([np.full(self.by_task[t].size, t, dtype=np.int64) for t in tasks])
            if tasks
            else np.empty(0, dtype=np.int64)
        )
        self._drawn = np.zeros(self._ids.size, dtype=bool)

    def start_event(self) -> None:
        """A new replay event: every sample may be drawn again."""
        self._drawn[:] = False

    def draw(
        self, n: int, rng: np.random.Generator, weights: np.ndarray | None = None
    ) -> np.ndarray:
        """Global ids of `n` samples not yet drawn in this event (`weights` per position)."""
        n = min(n, len(self))
        if n <= 0:
            return np.empty(0, dtype=np.int64)
        if int((~self._drawn).sum()) < n:
            self._drawn[:] = False
        pos = draw_positions(n, rng, weights, ~self._drawn)
        self._drawn[pos] = True
        return self._ids[pos]

    def state_dict(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "tasks": [int(t) for t in sorted(self.by_task)],
            "ids": [self.by_task[t].copy() for t in sorted(self.by_task)],
            "drawn": self._drawn.copy(),
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.capacity = int(state["capacity"])
        self.by_task = {
            int(t): np.asarray(ids, dtype=np.int64).copy()
            for t, ids in zip(state["tasks"], state["ids"], strict=True)
        }
        self._rebuild()
        self._drawn = np.asarray(state["drawn"], dtype=bool).copy()
        self.rng.bit_generator.state = state["rng"]
