"""The score matrix: every score of every task after every stage, plus general-ability columns.

All continual-learning metrics are computed from this matrix (see `retain.eval.metrics`), so it
is always stored whole: row 0 is the untouched base model, row t the model after task t, and
tasks not trained yet are evaluated too (forward transfer needs them). NaN marks a cell that
has not been evaluated yet, which is how an interrupted run is recognised and resumed.

With `cells="needed"` only the cells the metrics use are evaluated: row 0, the lower triangle
(tasks already learned) and the superdiagonal (the next task, for forward transfer); the other
cells stay NaN for good and a row counts as done without them.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

GENERAL_PREFIX = "general:"
"""Column-name prefix of general-ability benchmarks in `scores.csv`."""


class ScoreMatrix:
    """`R[t, i]`: score on task i after stage t (shape (T+1, T)); `G[t, m]`: general benchmark m.

    `score_types[name]` records how a task (or general benchmark) is scored, e.g. "accuracy",
    "exact_match", "token_f1", "perplexity"; `decoding[name]` its decoding settings. Both travel
    in the JSON form (checkpoints) but not in the CSV, which holds numbers only.
    """

    def __init__(
        self,
        tasks: list[str],
        general: list[str] | None = None,
        score_types: dict[str, str] | None = None,
        decoding: dict[str, dict[str, Any]] | None = None,
        cells: str = "all",
    ) -> None:
        if cells not in ("all", "needed"):
            raise ValueError(f"cells must be 'all' or 'needed', not {cells!r}")
        self.cells = cells
        if not tasks:
            raise ValueError("a score matrix needs at least one task")
        general = list(general or [])
        for kind, names in (("task", tasks), ("general benchmark", general)):
            if len(set(names)) != len(names):
                raise ValueError(f"duplicate {kind} names: {names}")
        self.tasks: list[str] = list(tasks)
        self.general: list[str] = general
        self.score_types: dict[str, str] = dict(score_types or {})
        self.decoding: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (decoding or {}).items()}
        self.R: np.ndarray = np.full((len(tasks) + 1, len(tasks)), np.nan, dtype=np.float64)
        self.G: np.ndarray = np.full((len(tasks) + 1, len(general)), np.nan, dtype=np.float64)

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def num_general(self) -> int:
        return len(self.general)

    def set_row(
        self, stage: int, scores: dict[str, float], general: dict[str, float] | None = None
    ) -> None:
        """Store the evaluation after `stage` (0 = base model); unknown names fail loudly so a
        renamed task cannot silently leave a hole in the matrix."""
        if not 0 <= stage <= self.num_tasks:
            raise IndexError(f"stage {stage} outside 0..{self.num_tasks}")
        index = {name: i for i, name in enumerate(self.tasks)}
        for name, value in scores.items():
            if name not in index:
                raise KeyError(f"unknown task {name!r}; tasks are {self.tasks}")
            self.R[stage, index[name]] = float(value)
        gindex = {name: i for i, name in enumerate(self.general)}
        for name, value in (general or {}).items():
            if name not in gindex:
                raise KeyError(f"unknown general benchmark {name!r}; known: {self.general}")
            self.G[stage, gindex[name]] = float(value)

    def needed_tasks(self, stage: int) -> list[int]:
        """Indices of the tasks evaluated at `stage`: all of them, or with `cells="needed"` the
        learned ones and the next (row 0 keeps every task: forward transfer compares to it)."""
        if self.cells == "all" or stage == 0:
            return list(range(self.num_tasks))
        return list(range(min(stage + 1, self.num_tasks)))

    def row_done(self, stage: int) -> bool:
        """A row is done when every needed task cell holds a number (general columns are
        optional)."""
        return bool(np.all(np.isfinite(self.R[stage, self.needed_tasks(stage)])))

    def rows_done(self) -> int:
        """Number of leading finished rows: 0 = nothing evaluated, T+1 = complete.

        Only the contiguous prefix counts, so `rows_done() - 1` is the last finished stage."""
        done = 0
        for stage in range(self.num_tasks + 1):
            if not self.row_done(stage):
                break
            done += 1
        return done

    def is_complete(self) -> bool:
        return self.rows_done() == self.num_tasks + 1

    def row(self, stage: int) -> dict[str, float]:
        """Scores of one stage by task name (NaN where not evaluated)."""
        return {name: float(v) for name, v in zip(self.tasks, self.R[stage], strict=True)}

    def general_row(self, stage: int) -> dict[str, float]:
        return {name: float(v) for name, v in zip(self.general, self.G[stage], strict=True)}

    # ---- CSV: the human-readable `scores.csv` of a run directory ----

    def header(self) -> list[str]:
        return ["stage", *self.tasks, *(GENERAL_PREFIX + m for m in self.general)]

    def to_csv(self, path: str | Path) -> None:
        """Written atomically so a crash never leaves half a matrix."""
        from retain.storage.files import write_text_atomic

        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(self.header())
        for stage in range(self.num_tasks + 1):
            writer.writerow([stage, *(_fmt(v) for v in [*self.R[stage], *self.G[stage]])])
        write_text_atomic(Path(path), out.getvalue())

    @classmethod
    def from_csv(cls, path: str | Path) -> ScoreMatrix:
        """Read `scores.csv`; score types and decoding are not in the CSV and come back empty."""
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        if not rows or not rows[0] or rows[0][0] != "stage":
            raise ValueError(f"{path}: not a score matrix (header must start with 'stage')")
        names = rows[0][1:]
        tasks = [n for n in names if not n.startswith(GENERAL_PREFIX)]
        general = [n[len(GENERAL_PREFIX) :] for n in names if n.startswith(GENERAL_PREFIX)]
        if names != [*tasks, *(GENERAL_PREFIX + m for m in general)]:
            raise ValueError(f"{path}: general columns must follow all task columns")
        matrix = cls(tasks, general)
        body = [r for r in rows[1:] if r]
        if len(body) != len(tasks) + 1:
            raise ValueError(f"{path}: expected {len(tasks) + 1} stage rows, found {len(body)}")
        matrix.cells = "needed"  # until a cell outside the needed ones holds a number
        for line, row in enumerate(body):
            if len(row) != len(names) + 1:
                raise ValueError(
                    f"{path}: row {line + 1} has {len(row)} cells, not {len(names) + 1}"
                )
            stage = int(row[0])
            if stage != line:
                raise ValueError(f"{path}: row {line + 1} is stage {stage}, expected {line}")
            values = [_parse(c) for c in row[1:]]
            matrix.R[stage] = values[: len(tasks)]
            matrix.G[stage] = values[len(tasks) :]
            outside = np.ones(len(tasks), dtype=bool)
            outside[cls(tasks, cells="needed").needed_tasks(stage)] = False
            if np.isfinite(matrix.R[stage, outside]).any():
                matrix.cells = "all"
        return matrix

    # ---- JSON: full precision plus score types and decoding, for checkpoints ----

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict (NaN becomes null) that `from_json` restores exactly."""
        return {
            "tasks": list(self.tasks),
            "general": list(self.general),
            "R": [[_json_num(v) for v in row] for row in self.R],
            "G": [[_json_num(v) for v in row] for row in self.G],
            "score_types": dict(self.score_types),
            "decoding": {k: dict(v) for k, v in self.decoding.items()},
            "cells": self.cells,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScoreMatrix:
        matrix = cls(
            list(data["tasks"]),
            list(data.get("general", [])),
            score_types=data.get("score_types"),
            decoding=data.get("decoding"),
            cells=data.get("cells", "all"),
        )
        for attr in ("R", "G"):
            target = getattr(matrix, attr)
            rows = data.get(attr, [])
            if len(rows) != target.shape[0] or any(len(r) != target.shape[1] for r in rows):
                raise ValueError(f"{attr} has the wrong shape; expected {target.shape}")
            for t, row in enumerate(rows):
                target[t] = [np.nan if v is None else float(v) for v in row]
        return matrix

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ScoreMatrix):
            return NotImplemented
        return (
            self.tasks == other.tasks
            and self.general == other.general
            and self.score_types == other.score_types
            and self.decoding == other.decoding
            and np.array_equal(self.R, other.R, equal_nan=True)
            and np.array_equal(self.G, other.G, equal_nan=True)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return (
            f"ScoreMatrix(tasks={self.tasks}, general={self.general}, "
            f"rows_done={self.rows_done()}/{self.num_tasks + 1})"
        )


def _fmt(value: float) -> str:
    return "" if not math.isfinite(value) else f"{value:.4f}"


def _parse(cell: str) -> float:
    cell = cell.strip()
    return np.nan if cell == "" or cell.lower() == "nan" else float(cell)


def _json_num(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
