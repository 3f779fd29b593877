"""Whether two runs may be paired example by example, and how that was established.

A paired bootstrap draws the same test examples from both runs, so it is only valid when both
scored the very same examples in the same order. From format 2 on, `examples.npz` records a
stable id per example (storage/example_ids.py), and pairing requires equal ids in equal order
for every task and general set. Runs written before ids existed pair when their stored data
fingerprints (`fingerprint.json`) hash the same evaluation sets, and the comparison says that
is how they were paired. Anything else is refused with the reason; counts alone never pair.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retain.storage.examples import ExampleResults
from retain.storage.fingerprint import FINGERPRINT_FILE


@dataclass(frozen=True)
class Side:
    """One run as pairing sees it: a label, its per-example results and data fingerprint."""

    label: str
    examples: ExampleResults | None
    fingerprint: dict[str, Any] | None

    @classmethod
    def of(cls, label: str, run_dir: Path, examples: ExampleResults | None) -> Side:
        return cls(label, examples, read_fingerprint(run_dir))


@dataclass(frozen=True)
class PairCheck:
    """`reason` why the runs cannot be paired (None: they can); `note` how they were paired
    when it was not by example ids."""

    reason: str | None = None
    note: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


def read_fingerprint(run_dir: Path) -> dict[str, Any] | None:
    """A run's stored data fingerprint (`fingerprint.json`, else the one in `metrics.json`)."""
    for name, key in ((FINGERPRINT_FILE, None), ("metrics.json", "fingerprint")):
        try:
            data = json.loads((Path(run_dir) / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        found = data.get(key) if key and isinstance(data, dict) else data
        if isinstance(found, dict) and isinstance(found.get("parts"), dict):
            return found
    return None


def _id_problem(name: str, a: list[str], b: list[str], sides: tuple[Side, Side]) -> str | None:
    if a == b:
        return None
    if len(a) != len(b):
        return (f"{name!r} has {len(a)} test examples in {sides[0].label} and {len(b)} in "
                f"{sides[1].label}")
    if sorted(a) == sorted(b):
        return f"{name!r} lists the same test examples in another order"
    first = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
    return f"{name!r} was scored on other test examples (they differ from example {first} on)"


def _fingerprint_problem(sides: tuple[Side, Side], general: bool) -> str | None:
    """Why the stored fingerprints do not show the same evaluation sets, or None."""
    missing = [s.label for s in sides if s.fingerprint is None]
    if missing:
        return f"no {FINGERPRINT_FILE} in {', '.join(missing)}"
    a, b = (s.fingerprint["parts"] for s in sides)  # type: ignore[index]
    for part, words in (("test_data", "test data"), ("general_data", "general-ability data")):
        if part == "general_data" and not general:
            continue
        if a.get(part) is None or a.get(part) != b.get(part):
            return f"their fingerprints' {words} hashes differ"
    return None


def check_pairing(
    first: Side, second: Side, tasks: Sequence[str], general: Sequence[str] = ()
) -> PairCheck:
    """Whether `first` and `second` scored the same examples of `tasks` and `general`."""
    sides = (first, second)
    missing = [s.label for s in sides if s.examples is None]
    if missing:
        return PairCheck(f"no per-example results in {', '.join(missing)}")
    a, b = first.examples, second.examples
    assert a is not None and b is not None
    names = [*tasks, *general]
    absent = [n for n in names if n not in a.names() or n not in b.names()]
    if absent:
        return PairCheck(f"{absent[0]!r} has no per-example results in both runs")
    without_ids = [n for n in names if a.ids(n) is None or b.ids(n) is None]
    for name in names:
        if name in without_ids:
            continue
        problem = _id_problem(name, a.ids(name) or [], b.ids(name) or [], sides)
        if problem is not None:
            return PairCheck(problem)
    if not without_ids:
        return PairCheck()
    older = [s.label for s, r in zip(sides, (a, b), strict=True)
             if any(r.ids(n) is None for n in without_ids)]
    problem = _fingerprint_problem(sides, any(n in general for n in without_ids))
    if problem is None:
        counts = [n for n in without_ids if a.n_examples(n) != b.n_examples(n)]
        if counts:
            n = counts[0]
            problem = f"{n!r} has {a.n_examples(n)} and {b.n_examples(n)} test examples"
    if problem is not None:
        return PairCheck(
            f"{', '.join(older)} records no example ids (written by an older retain) and {problem}"
        )
    return PairCheck(note=(
        f"paired by the stored fingerprints' test-data hashes: {', '.join(older)} "
        "records no example ids (written by an older retain)"
    ))
