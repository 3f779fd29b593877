"""Per-example results of a run: every score of every example in every evaluated cell.

Confidence intervals and paired comparisons resample test examples, so the matrix of means is
not enough; this keeps what the means were made of. A cell is (stage, name), where name is a
task or a general benchmark. Scored columns hold per-example scores in [0, 1] (plus optional
extra per-example metrics such as `accuracy_norm`); perplexity columns hold per-paragraph
(nll_sum, token_count), because perplexity is a ratio of sums and must be resampled as one.

The example order of a name is fixed: every stage scores the same examples in the same order,
which is what lets the bootstrap reuse one set of resampled indices at every stage. A cell that
was not evaluated is absent (`get` returns None), never zero.

File layout of `examples.npz` (format 2; strings as fixed-width unicode arrays, no pickles):
  `format`               int64 scalar, 2
  `names`, `kinds`       [K] column names and kinds ("score" | "perplexity"), in first-set order
  `c{k}.stages`          int64 [S_k] evaluated stages of column k, ascending
  `c{k}.scores`          float64 [S_k, n_k] (score columns)
  `c{k}.extra_names`     [E_k] names of the extra metrics; `c{k}.extra{e}` float64 [S_k, n_k]
  `c{k}.nll_sum`, `c{k}.token_count`  float64 [S_k, n_k] (perplexity columns)
  `c{k}.ids`             [n_k] example ids (storage/example_ids.py: a hash of the encoded
                         prompt and answer); written by runs from format 2 on
`to_dict` gives the same keys with string arrays as lists of str, for checkpoints.

Versions: format 1 files (no ids) still load. A reader ignores keys it does not know, so an
addition older readers may skip (a second score, generated text) adds keys `c{k}.<what>` and
keeps FORMAT; a change of what existing keys mean bumps FORMAT, and a file newer than the
reader is refused with the fix (upgrade retain).
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retain.storage.files import replaced_atomically

EXAMPLES_FILE = "examples.npz"
"""File name of the per-example results inside a run directory."""

FORMAT = 2
READABLE_FORMATS = (1, 2)
SCORE = "score"
PERPLEXITY = "perplexity"


@dataclass(frozen=True)
class Cell:
    """One evaluated (stage, name): per-example arrays, all of the column's length n."""

    kind: str
    scores: np.ndarray | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    nll_sum: np.ndarray | None = None
    token_count: np.ndarray | None = None

    @property
    def n(self) -> int:
        arr = self.scores if self.kind == SCORE else self.nll_sum
        assert arr is not None
        return int(arr.shape[0])

    def value(self) -> float:
        """The matrix value: 100·mean score (summed like `task_score`), or corpus perplexity."""
        if self.kind == SCORE:
            assert self.scores is not None
            return 100.0 * sum(self.scores.tolist()) / self.n
        assert self.nll_sum is not None and self.token_count is not None
        tokens = float(self.token_count.sum())
        return math.exp(float(self.nll_sum.sum()) / tokens) if tokens > 0 else math.nan


def _vector(values: Any, what: str, n: int | None) -> np.ndarray:
    """A finite 1-D float array of the column's length (any length > 0 for a new column)."""
    if values is None:
        raise ValueError(f"{what}: missing")
    arr = np.array(values, dtype=np.float64).reshape(-1)
    if n is None and arr.size == 0:
        raise ValueError(f"{what}: needs at least one example")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{what}: {arr.shape[0]} examples, but this column has {n}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what}: non-finite values")
    return arr


class ExampleResults:
    """Per-example results keyed by (stage, name); see the module docstring for the layout."""

    def __init__(self) -> None:
        self._cells: dict[str, dict[int, Cell]] = {}
        self._kinds: dict[str, str] = {}
        self._n: dict[str, int] = {}
        self._ids: dict[str, list[str]] = {}

    # ---- writing ----

    def _check(self, stage: int, name: str, kind: str) -> None:
        if isinstance(stage, bool) or not isinstance(stage, int | np.integer) or stage < 0:
            raise ValueError(f"stage must be a non-negative int, not {stage!r}")
        if not isinstance(name, str) or not name:
            raise ValueError(f"column name must be a non-empty string, not {name!r}")
        if name in self._kinds and self._kinds[name] != kind:
            raise ValueError(f"{name!r} is a {self._kinds[name]} column, not {kind}")

    def _store(self, stage: int, name: str, cell: Cell, ids: Iterable[Any] | None) -> None:
        """Ids are fixed per column: a stage that lists other ids would break the pairing."""
        if ids is not None:
            got = [str(i) for i in ids]
            if len(got) != cell.n:
                raise ValueError(f"{name!r}: {len(got)} ids for {cell.n} examples")
            if name in self._ids and self._ids[name] != got:
                raise ValueError(f"{name!r}: example ids differ from the earlier stages")
            self._ids[name] = got
        self._kinds[name] = cell.kind
        self._n[name] = cell.n
        self._cells.setdefault(name, {})[int(stage)] = cell

    def set(
        self,
        stage: int,
        name: str,
        scores: Any,
        extra: Mapping[str, Any] | None = None,
        ids: Iterable[Any] | None = None,
    ) -> None:
        """Store a scored cell (overwrites a re-evaluated one); lengths must match the column."""
        self._check(stage, name, SCORE)
        n = self._n.get(name)
        arr = _vector(scores, f"{name!r} stage {stage} scores", n)
        if np.any(arr < 0) or np.any(arr > 1):
            raise ValueError(f"{name!r} stage {stage}: scores must lie in [0, 1]")
        extras = {
            str(k): _vector(v, f"{name!r} stage {stage} extra {k!r}", arr.shape[0])
            for k, v in (extra or {}).items()
        }
        others = [c for s, c in self._cells.get(name, {}).items() if s != stage]
        if others and sorted(others[0].extra) != sorted(extras):
            raise ValueError(
                f"{name!r}: extra metrics {sorted(extras)} differ from the other stages' "
                f"{sorted(others[0].extra)}"
            )
        self._store(stage, name, Cell(SCORE, scores=arr, extra=extras), ids)

    def set_perplexity(
        self,
        stage: int,
        name: str,
        nll_sum: Any,
        token_count: Any,
        ids: Iterable[Any] | None = None,
    ) -> None:
        """Store a perplexity cell as per-paragraph sums, so it can be resampled as a ratio."""
        self._check(stage, name, PERPLEXITY)
        n = self._n.get(name)
        nll = _vector(nll_sum, f"{name!r} stage {stage} nll_sum", n)
        tok = _vector(token_count, f"{name!r} stage {stage} token_count", nll.shape[0])
        if np.any(tok < 0) or np.any(nll < 0):
            raise ValueError(f"{name!r} stage {stage}: nll sums and token counts must be >= 0")
        self._store(stage, name, Cell(PERPLEXITY, nll_sum=nll, token_count=tok), ids)

    # ---- reading ----

    def get(self, stage: int, name: str) -> Cell | None:
        """The cell, or None when it was not evaluated."""
        return self._cells.get(name, {}).get(int(stage))

    def has(self, stage: int, name: str) -> bool:
        return self.get(stage, name) is not None

    def names(self) -> list[str]:
        return list(self._cells)

    def kind(self, name: str) -> str:
        return self._kinds[name]

    def stages(self) -> list[int]:
        """Every stage with at least one evaluated cell, ascending."""
        return sorted({s for cells in self._cells.values() for s in cells})

    def stages_of(self, name: str) -> list[int]:
        return sorted(self._cells.get(name, {}))

    def n_examples(self, name: str) -> int:
        """Examples (paragraphs) of a column; 0 when it has no cell."""
        return self._n.get(name, 0)

    def n_per_task(self, names: Iterable[str] | None = None) -> dict[str, int]:
        return {name: self.n_examples(name) for name in (self.names() if names is None else names)}

    def ids(self, name: str) -> list[str] | None:
        return list(self._ids[name]) if name in self._ids else None

    def stacked(self, name: str, array: str = "scores") -> tuple[np.ndarray, np.ndarray]:
        """(stages [S], values [S, n]) of one per-example array, for vectorised resampling."""
        stages = self.stages_of(name)
        cells = [self._cells[name][s] for s in stages]
        rows = [c.extra[array] if array in c.extra else getattr(c, array) for c in cells]
        return np.array(stages, dtype=np.int64), np.stack(rows) if rows else np.zeros((0, 0))

    # ---- dict / npz ----

    def to_dict(self) -> dict[str, Any]:
        """Flat dict of str -> arrays / lists / ints (the npz layout), for checkpoints."""
        out: dict[str, Any] = {"format": FORMAT, "names": self.names()}
        out["kinds"] = [self._kinds[n] for n in out["names"]]
        for k, name in enumerate(out["names"]):
            stages, _ = self.stacked(name, "scores" if self._kinds[name] == SCORE else "nll_sum")
            out[f"c{k}.stages"] = stages
            if self._kinds[name] == SCORE:
                out[f"c{k}.scores"] = self.stacked(name, "scores")[1]
                extra_names = sorted(self._cells[name][int(stages[0])].extra)
                out[f"c{k}.extra_names"] = extra_names
                for e, extra in enumerate(extra_names):
                    out[f"c{k}.extra{e}"] = self.stacked(name, extra)[1]
            else:
                out[f"c{k}.nll_sum"] = self.stacked(name, "nll_sum")[1]
                out[f"c{k}.token_count"] = self.stacked(name, "token_count")[1]
            if name in self._ids:
                out[f"c{k}.ids"] = list(self._ids[name])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExampleResults:
        """Inverse of `to_dict`; also reads what `np.load` gives back for `examples.npz`."""
        fmt = int(np.asarray(data.get("format", -1)))
        if fmt > FORMAT:
            raise ValueError(f"per-example results of format {fmt}, written by a newer retain "
                             f"(this one reads up to {FORMAT}); upgrade retain")
        if fmt not in READABLE_FORMATS:
            raise ValueError(f"unknown per-example results format {fmt}; expected one of "
                             f"{', '.join(map(str, READABLE_FORMATS))}")
        names, kinds = _strings(data["names"]), _strings(data["kinds"])
        if len(names) != len(kinds):
            raise ValueError("names and kinds differ in length")
        out = cls()
        for k, (name, kind) in enumerate(zip(names, kinds, strict=True)):
            stages = np.asarray(data[f"c{k}.stages"]).astype(np.int64).reshape(-1)
            ids = _strings(data[f"c{k}.ids"]) if f"c{k}.ids" in data else None
            if kind == SCORE:
                scores = np.asarray(data[f"c{k}.scores"], dtype=np.float64)
                extra_names = _strings(data.get(f"c{k}.extra_names", []))
                extras = [np.asarray(data[f"c{k}.extra{e}"]) for e in range(len(extra_names))]
                for row, stage in enumerate(stages.tolist()):
                    extra = {e: x[row] for e, x in zip(extra_names, extras, strict=True)}
                    out.set(stage, name, scores[row], extra, ids)
            elif kind == PERPLEXITY:
                nll = np.asarray(data[f"c{k}.nll_sum"], dtype=np.float64)
                tok = np.asarray(data[f"c{k}.token_count"], dtype=np.float64)
                for row, stage in enumerate(stages.tolist()):
                    out.set_perplexity(stage, name, nll[row], tok[row], ids)
            else:
                raise ValueError(f"column {name!r} has unknown kind {kind!r}")
        return out

    def save(self, path: str | Path) -> Path:
        """Write `examples.npz` (path may be the run directory) atomically: temp file, replace."""
        path = Path(path)
        if path.is_dir():
            path = path / EXAMPLES_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {
            key: np.array(value, dtype=str) if isinstance(value, list) else np.asarray(value)
            for key, value in self.to_dict().items()
        }
        with replaced_atomically(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)  # a file object: savez would otherwise add ".npz"
            f.flush()
            os.fsync(f.fileno())
        return path

    @classmethod
    def load(cls, path: str | Path) -> ExampleResults:
        path = Path(path)
        if path.is_dir():
            path = path / EXAMPLES_FILE
        try:
            with np.load(path, allow_pickle=False) as data:
                return cls.from_dict({key: data[key] for key in data.files})
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            detail = " ".join(str(exc).split())[:120]
            raise ValueError(
                f"{path} is damaged ({type(exc).__name__}: {detail}); restore it from a copy, "
                "or resume the run from a checkpoint, which rewrites it"
            ) from None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ExampleResults):
            return NotImplemented
        mine, theirs = self.to_dict(), other.to_dict()
        if mine.keys() != theirs.keys():
            return False
        return all(np.array_equal(np.asarray(mine[k]), np.asarray(theirs[k])) for k in mine)

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        cells = sum(len(c) for c in self._cells.values())
        return f"ExampleResults(columns={len(self._cells)}, cells={cells}, stages={self.stages()})"


def _strings(value: Any) -> list[str]:
    return [str(v) for v in np.asarray(value, dtype=str).reshape(-1).tolist()]
