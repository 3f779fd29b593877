"""`gap_closed` references: sibling `sequential/` and `multitask/` runs of the same data.

A reference is used only when its data fingerprint matches the run's on stream, model, seed,
subsampling and the encoded training and test data; otherwise `gap_closed` is None and
`gap_closed_note` says which reference is missing or what differs, so a number computed
against another stream can never appear.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from retain.eval.matrix import ScoreMatrix
from retain.storage.fingerprint import REFERENCE_PARTS, fingerprint_differences

KINDS = ("sequential", "multitask")


def _check_reference(kind: str, ref_dir: Path, fingerprint: dict[str, Any]) -> float | str:
    """The reference's final `ap`, or why it cannot be used."""
    path = ref_dir / "metrics.json"
    if not path.exists():
        return f"no {kind} reference run at {ref_dir} (run it on the same stream and seed)"
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return f"the {kind} reference's {path} is unreadable"
    theirs = metrics.get("fingerprint")
    if not isinstance(theirs, dict):
        return f"the {kind} reference at {ref_dir} has no data fingerprint (rerun it)"
    if theirs.get("methods") != [kind]:
        return f"{ref_dir} is not a {kind} run (methods {theirs.get('methods')})"
    diffs = fingerprint_differences(theirs, fingerprint, REFERENCE_PARTS)
    if diffs:
        return f"the {kind} reference at {ref_dir} differs: {'; '.join(diffs)}"
    if not metrics.get("complete") or metrics.get("ap") is None:
        return f"the {kind} reference at {ref_dir} is incomplete"
    return float(metrics["ap"])


def find_references(
    run_dir: Path, fingerprint: dict[str, Any]
) -> tuple[dict[str, float], dict[str, str], list[str]]:
    """`ap_<kind>` of the usable references, their paths, and why the others are not used."""
    refs: dict[str, float] = {}
    paths: dict[str, str] = {}
    notes: list[str] = []
    for kind in KINDS:
        ref_dir = Path(run_dir).parent / kind
        if ref_dir.resolve() == Path(run_dir).resolve():
            notes.append(f"this run is the {kind} reference")
            continue
        found = _check_reference(kind, ref_dir, fingerprint)
        if isinstance(found, str):
            notes.append(found)
        else:
            refs[f"ap_{kind}"] = found
            paths[kind] = str(ref_dir)
    return refs, paths, notes


def metrics_with_references(
    matrix: ScoreMatrix, run_dir: Path, fingerprint: dict[str, Any]
) -> dict[str, Any]:
    """Every metric, `gap_closed` against matching references only, and the run's fingerprint."""
    from retain.eval.metrics import compute_metrics

    refs, paths, notes = find_references(run_dir, fingerprint)
    metrics = compute_metrics(matrix, refs)
    if metrics["gap_closed"] is None and not notes:
        if not metrics["complete"]:
            notes.append("the run is incomplete")
        else:
            notes.append("ap_multitask equals ap_sequential (no gap to close)")
    metrics["gap_closed_note"] = "; ".join(notes) if metrics["gap_closed"] is None else None
    metrics["gap_closed_references"] = paths
    metrics["fingerprint"] = fingerprint
    return metrics
