"""`GeneralRowSampler`: which general rows join each step under `per_batch` mixing, and where.

Kept apart from the plugin because it is the one piece of GeRe with its own random state:
replay rows come from a permutation of the set, reshuffled when used up, so every row is
replayed equally often; the positions they take in the step are drawn from the same generator,
so a resumed run puts the same rows at the same places.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from retain.data.encoding import BatchPlan

SAMPLER_SEED_TAG = 0x47455245
"""Mixed into the run's seed, so the sampler's draws do not repeat another component's."""


class GeneralRowSampler:
    """Draws k general rows a step (store ids from `first` on) and places them in the plan."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng([seed, SAMPLER_SEED_TAG])
        self.perm = np.zeros(0, dtype=np.int64)
        self.cursor = 0

    def draw(self, k: int, set_size: int, first: int) -> list[int]:
        """The next k rows of the permutation, as store ids."""
        drawn = []
        while len(drawn) < k:
            if self.cursor >= len(self.perm):
                self.perm, self.cursor = self.rng.permutation(set_size), 0
            drawn.append(first + int(self.perm[self.cursor]))
            self.cursor += 1
        return drawn

    def compose(self, plan: BatchPlan, rows: int, set_size: int, first: int) -> BatchPlan:
        """The step's `rows` rows: the plan's task rows with `rows − len(plan)` general rows
        inserted at random positions (flagged as no replay: general rows have task_of −1)."""
        k = rows - len(plan.sample_ids)
        if k <= 0:
            return plan
        drawn = iter(self.draw(k, set_size, first))
        at = set(int(p) for p in self.rng.choice(rows, size=k, replace=False))
        ids, flags = iter(plan.sample_ids), iter(plan.is_replay)
        out_ids, out_flags = [], []
        for position in range(rows):
            if position in at:
                out_ids.append(next(drawn))
                out_flags.append(False)
            else:
                out_ids.append(next(ids))
                out_flags.append(next(flags))
        return BatchPlan(out_ids, out_flags)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "perm": self.perm, "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.perm = np.asarray(state["perm"], dtype=np.int64)
        self.cursor = int(state["cursor"])
