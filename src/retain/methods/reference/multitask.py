"""`multitask`: joint training on all tasks, the usual upper bound of a continual stream."""

from __future__ import annotations

from retain.methods.base import Context, Plugin


class MultitaskPlugin(Plugin):
    """Every stage trains on the union of all tasks' training data.

    Decision: the reference keeps the stream's stage structure (same steps per stage, a full
    evaluation row after each), so its score matrix and compute are comparable with every
    continual method; only the data of each stage differs. Its last row is the upper bound.
    """

    name = "multitask"

    def task_data(self, ctx: Context, task_index: int, sample_ids: list[int]) -> list[int]:
        return [i for pool in ctx.task_samples for i in pool]
