"""Generation forgetting split exactly into format and knowledge.

A generated answer scores only if it is one of the task's labels, so the generation score of
a cell is G = V · C: V the valid-answer rate, C the accuracy among valid answers. From the
stage a task was learned (i) to the last stage (T),

    ΔG = ΔV · mean(C) + ΔC · mean(V)        (means of the two stages; exact, no remainder)

The first term is forgetting of the format (the model no longer answers with a label), the
second of the knowledge (it answers with the wrong label). The option score's change ΔL is set
beside it as the scorer-independent measure of knowledge. The BWT split averages these over
tasks 1..T-1, as BWT does. With a metric that can credit an invalid answer (contains, F1), G
is not V · C; the split then explains V · C and says how far G is from it (`residual`).
Intervals: over test examples, conditional on the training seed, from the stratified example
bootstrap through `eval.stats.estimate` (the interval every other metric gets).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from retain.results.scorers import VALID, per_example
from retain.storage.examples import ExampleResults

PARTS = ("delta_g", "format", "knowledge", "delta_loglik", "residual")


def _parts(g: list[np.ndarray], v: list[np.ndarray], ll: list[np.ndarray | None]) -> np.ndarray:
    """[5, ...] of the parts from per-stage (i, T) arrays [..., n] (×100)."""
    G = [x.mean(-1) for x in g]
    V = [x.mean(-1) for x in v]
    with np.errstate(divide="ignore", invalid="ignore"):
        C = [np.where(vv > 0, (gg * v_).sum(-1) / v_.sum(-1), 0.0)
             for gg, v_, vv in zip(g, v, V, strict=True)]
    fmt = (V[1] - V[0]) * (C[0] + C[1]) / 2
    know = (C[1] - C[0]) * (V[0] + V[1]) / 2
    dl = ll[1].mean(-1) - ll[0].mean(-1) if ll[0] is not None and ll[1] is not None else (
        np.full_like(fmt, np.nan))
    dg = G[1] - G[0]
    return 100.0 * np.stack([dg, fmt, know, dl, dg - fmt - know])


Chosen = list[tuple[str, list[np.ndarray], list[np.ndarray], list[np.ndarray | None]]]


def _chosen(examples: ExampleResults, tasks: Sequence[str], primary_only: bool = False) -> Chosen:
    """Per task 1..T-1 with a generation score and validity at its own stage i and the last
    stage T: (name, G at [i, T], V at [i, T], log-likelihood score at [i, T] or None);
    `primary_only`: only tasks whose primary score is that generation score."""
    last = len(tasks)
    chosen: Chosen = []
    for i, name in enumerate(tasks[:-1], start=1):
        g = [per_example(examples, name, "generate", s) for s in (i, last)]
        v = [per_example(examples, name, VALID, s) for s in (i, last)]
        ll = [per_example(examples, name, "loglik", s) for s in (i, last)]
        if any(x is None for x in (*g, *v)):
            continue
        if primary_only and not all(
            np.array_equal(per_example(examples, name, "scores", s), x)
            for s, x in zip((i, last), g, strict=True)
        ):
            continue
        chosen.append((name, g, v, ll))  # type: ignore[arg-type]
    return chosen


SPLIT_METRICS = ("bwt_format", "bwt_knowledge")
"""BWT's two parts as bench metrics (their sum is BWT when generation is the primary score)."""


def bwt_split_replicates(
    examples: ExampleResults, tasks: Sequence[str], indices: dict[str, np.ndarray] | None
) -> dict[str, np.ndarray]:
    """`bwt_format` and `bwt_knowledge` on each resample of `indices` (from
    `resample_indices`, possibly drawn on another run with the same examples, which pairs the
    runs), as arrays [n_resamples]; `indices` None: the point values, [1]. {} when no task has
    generation as its primary score, with validity: the split explains the primary BWT only
    (a bench then shows no split, e.g. in its tables by options)."""
    chosen = _chosen(examples, tasks, primary_only=True)
    if not chosen:
        return {}

    def pick(x: np.ndarray, name: str) -> np.ndarray:
        return x[None, :] if indices is None else x[indices[name]]

    parts = np.mean([
        _parts([pick(x, n) for x in g], [pick(x, n) for x in v],
               [None if x is None else pick(x, n) for x in ll])
        for n, g, v, ll in chosen
    ], axis=0)  # fmt: skip
    return {"bwt_format": parts[1], "bwt_knowledge": parts[2]}


def forgetting_split(
    examples: ExampleResults,
    tasks: Sequence[str],
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """`{"tasks": {name: {part: {"value","low","high"}}}, "bwt": {...}}` for every task with a
    generation score and validity at its own stage and the last one; {} when none has."""
    from retain.eval.stats import estimate
    from retain.eval.uncertainty import resample_indices, resampling_strata

    chosen = _chosen(examples, tasks)
    if not chosen:
        return {}
    idx = resample_indices(examples, [c[0] for c in chosen], n_resamples, seed)
    point = {name: _parts(g, v, ll) for name, g, v, ll in chosen}
    reps = {
        name: _parts(
            [x[idx[name]] for x in g], [x[idx[name]] for x in v],
            [None if x is None else x[idx[name]] for x in ll],
        )
        for name, g, v, ll in chosen
    }

    def interval(value: np.ndarray, rep: np.ndarray, names: list[str]) -> dict[str, Any]:
        strata = resampling_strata(examples, names)
        out = {}
        for k, part in enumerate(PARTS):
            if not np.isfinite(value[k]):
                out[part] = None
                continue
            est = estimate([float(value[k])], [rep[k]], strata=strata, level=level)
            out[part] = {"value": float(value[k]), "low": est.low, "high": est.high}
        return out

    result: dict[str, Any] = {
        "tasks": {n: interval(point[n], reps[n], [n]) for n in point}
    }
    result["bwt"] = interval(
        np.mean([point[n] for n in point], axis=0),
        np.mean([reps[n] for n in point], axis=0),
        list(point),
    )
    result["bwt_tasks"] = list(point)
    return result
