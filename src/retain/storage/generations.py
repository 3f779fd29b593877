"""The generated text of every example in every evaluated cell: `generations.jsonl.gz`.

Scores say how often an answer was right; the text says what the model answered instead (a
model that answers agnews with `positive` has lost the format, not only the knowledge). One JSON
line per cell, `{"stage": s, "task": name, "texts": [...]}`, texts in the example order of
`examples.npz`; gzip keeps it small. The file is rewritten whole (atomically) after every row,
so an interrupted run keeps every finished row, as `examples.npz` does.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from retain.storage.files import replaced_atomically
from retain.storage.run_files import GENERATIONS

GENERATIONS_FILE = GENERATIONS
"""File name of the generated texts inside a run directory."""

Cells = dict[tuple[int, str], list[str]]


def load_generations(path: str | Path) -> Cells:
    """{(stage, task): texts}; a missing file is empty, a torn line is skipped."""
    path = Path(path)
    if not path.exists():
        return {}
    cells: Cells = {}
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    cells[(int(rec["stage"]), str(rec["task"]))] = [str(t) for t in rec["texts"]]
                except (ValueError, KeyError, TypeError):
                    continue
    except (OSError, EOFError):
        pass  # a truncated gzip stream keeps the lines read so far
    return cells


def save_generations(path: str | Path, cells: Mapping[tuple[int, str], Sequence[str]]) -> None:
    """Write every cell, sorted by stage then task name, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(path) as tmp, gzip.open(tmp, "wt", encoding="utf-8") as f:
        for (stage, task), texts in sorted(cells.items()):
            f.write(json.dumps({"stage": stage, "task": task, "texts": list(texts)}) + "\n")


def update_generations(
    path: str | Path, stage: int, texts: Mapping[str, Sequence[str]]
) -> None:
    """Replace the cells of `stage` named in `texts` and keep every other cell."""
    if not texts:
        return
    cells = load_generations(path)
    for task, values in texts.items():
        cells[(stage, task)] = list(values)
    save_generations(path, cells)
