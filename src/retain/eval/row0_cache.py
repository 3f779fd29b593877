"""Row 0 scored once for all the runs of a bench: the untouched model's evaluation row.

Every method starts from the untouched model — a new LoRA's B factor is zero (so are ProCL's and
O-LoRA's adapters at the start), and GeRe changes no weight before row 0 — so row 0 is the same
for every method and seed that share the model, the encoded test and general sets and the
evaluation settings. A bench scores it once and the other runs read it (`eval.row0_cache`).
The key covers the model, the data fingerprint's evaluation parts, the evaluation settings and
the source code of the scoring path, so any change there scores afresh. The cached row keeps
the seconds its evaluation took, and those are what a run's cost reports (cost stays honest).
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any

from retain.eval.evaluate import EvalResult
from retain.eval.row import RowScores
from retain.storage.files import write_text_atomic

CODE = ("eval", "data/encoding.py", "data/normalize.py", "models/loading.py")
"""Sources (under the retain package) whose change can change a score of row 0."""

NOT_SCORING = frozenset({"eval/matrix.py", "eval/metrics.py", "eval/seeds.py",
                         "eval/uncertainty.py", "eval/paired_differences.py"})
"""Modules under `eval/` that only read scores (metrics, intervals): editing them
must not throw away a bench's cached row 0. A new module under `eval/` counts as scoring."""


def _code_digest(root: Path | None = None) -> str:
    root = Path(str(resources.files("retain"))) if root is None else root
    h = hashlib.sha256()
    for part in CODE:
        entry = root / part
        files = sorted(entry.rglob("*.py")) if entry.is_dir() else [entry]
        for path in files:
            if path.relative_to(root).as_posix() in NOT_SCORING:
                continue
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def row0_key(config: Any, fingerprint: dict[str, Any]) -> str:
    parts = fingerprint.get("parts", {})
    ev = config.eval
    key = {
        "model": config.model.name_or_path,
        "dtype": config.model.dtype,
        "mixed_precision": config.train.mixed_precision,
        "stream": parts.get("stream"),
        "test_data": parts.get("test_data"),
        "general_data": parts.get("general_data"),
        "eval": {"batch_size": ev.batch_size, "loglik_norm": ev.loglik_norm,
                 "max_prompt_tokens": ev.max_prompt_tokens, "score": ev.score},
        "code": _code_digest(),
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def load_row0(folder: Path, key: str) -> RowScores | None:
    path = Path(folder) / f"{key}.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return RowScores(
        scores=data["scores"],
        general=data["general"],
        seconds=float(data["seconds"]),
        examples={n: EvalResult(**r) for n, r in data["examples"].items()},
        perplexity_parts={n: (p[0], p[1]) for n, p in data["perplexity_parts"].items()},
    )


def save_row0(folder: Path, key: str, row: RowScores) -> None:
    Path(folder).mkdir(parents=True, exist_ok=True)
    data = {
        "scores": row.scores,
        "general": row.general,
        "seconds": row.seconds,
        "examples": {n: vars(r) for n, r in row.examples.items()},
        "perplexity_parts": {n: [list(a), list(b)] for n, (a, b) in row.perplexity_parts.items()},
    }
    write_text_atomic(Path(folder) / f"{key}.json", json.dumps(data))
