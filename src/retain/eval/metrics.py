"""Continual-learning metrics and cost metrics, exactly as defined in the project's metrics spec.

Definitions differ silently across codebases (Avalanche's forgetting is first-minus-last, some
divide BWT by T), so every formula here is spelled out in `DEFINITIONS`, which travels in
`metrics.json`. Tasks are numbered 1..T in the formulas; in the arrays task i is column i-1 and
stage t is row t (row 0 = base model).

An incomplete matrix (interrupted run) is scored as the prefix stream of its first L tasks,
where L is the last finished stage: `ap` is then the average at stage L over tasks 1..L, and so
on. `last_stage`, `num_tasks` and `complete` in the result say which case applies.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from retain.eval.matrix import ScoreMatrix

METRIC_NAMES: tuple[str, ...] = (
    "ap",
    "ap_per_stage",
    "aia",
    "la",
    "bwt",
    "forgetting_max",
    "forgetting_first",
    "fwt",
    "general_delta",
    "f1_general_ap",
    "normalized_avg",
    "gap_closed",
)
"""Every metric of the spec, in display order."""

LOWER_IS_BETTER_TYPES: frozenset[str] = frozenset({"perplexity", "ppl", "loss", "nll"})
"""General score types that are not 0-100 'higher is better' scores; they are kept in the matrix
but left out of `general_delta` and `f1_general_ap`, which would otherwise mix scales."""

DEFINITIONS: dict[str, str] = {
    "ap": "Average performance after the last task: (1/T) Σ_i R[T,i] "
    "(GEM ACC, TRACE OP, O-LoRA AA).",
    "ap_per_stage": "ap_per_stage[t-1] = (1/t) Σ_{i≤t} R[t,i] for t = 1..T "
    "(list index t-1 is stage t).",
    "aia": "Average incremental performance: mean of ap_per_stage over t = 1..T.",
    "la": "Learning accuracy (plasticity): (1/T) Σ_i R[i,i].",
    "bwt": "Backward transfer (Lopez-Paz & Ranzato): (1/(T−1)) Σ_{i<T} (R[T,i] − R[i,i]); "
    "divided by T−1, not T. Undefined for T=1.",
    "forgetting_max": "Forgetting (Chaudhry et al.): (1/(T−1)) Σ_{j<T} "
    "(max_{j≤l≤T−1} R[l,j] − R[T,j]); the max runs over the stages after task j was learned "
    "(l ≥ j, so the base-model row 0 never counts), and it is max-minus-last, not "
    "first-minus-last. Undefined for T=1. Biased upwards by test noise (a max over noisy "
    "scores): on small test sets read it against multitask's, which has nothing to forget.",
    "forgetting_first": "Forgetting of the first task: max_{1≤l≤T−1} R[l,1] − R[T,1], "
    "forgetting_max's term for j = 1 (the task a stream has longest to forget). Undefined for "
    "T=1.",
    "fwt": "Forward transfer against the base model: (1/(T−1)) Σ_{i=2..T} (R[i−1,i] − R[0,i]). "
    "Undefined for T=1.",
    "general_delta": "General-ability delta (TRACE): (1/M) Σ_m (G[T,m] − G[0,m]) over the "
    "general benchmarks scored in both rows; perplexity-type columns are excluded.",
    "f1_general_ap": "GeRe combined score: harmonic mean 2·Ḡ·ap/(Ḡ+ap) of the mean general "
    "score Ḡ = mean_m G[T,m] (perplexity-type columns excluded) and ap.",
    "normalized_avg": "MSSR normalized average: mean over tasks of R[T,i] / max_{0≤t≤T} R[t,i]; "
    "tasks whose maximum is 0 are skipped. The max runs over the evaluated stages: with "
    "eval.cells=needed those are t=0 and t≥i−1 (a task is not scored before the stage ahead "
    "of it).",
    "gap_closed": "(ap − ap_sequential) / (ap_multitask − ap_sequential) against reference runs "
    "on the same stream and seed (sequential = plain fine-tuning, multitask = joint training); "
    "only for a complete matrix and a non-zero denominator.",
    "incomplete": "For an interrupted run every metric is computed on the prefix stream of the "
    "first L tasks, with T replaced by the last finished stage L (rows 0..L, tasks 1..L).",
}


def compute_metrics(
    matrix: ScoreMatrix, references: dict[str, float] | None = None
) -> dict[str, Any]:
    """All metrics of the spec from the stored matrix; a metric is None where undefined.

    `references` may hold `ap_sequential` and `ap_multitask` (final `ap` of the reference runs)
    for `gap_closed`. Values are plain Python floats, ready for JSON.
    """
    T = matrix.num_tasks
    L = matrix.rows_done() - 1
    out: dict[str, Any] = {name: None for name in METRIC_NAMES}
    out["ap_per_stage"] = []
    out["num_tasks"] = T
    out["last_stage"] = L if L >= 0 else None
    out["complete"] = L == T
    out["general_benchmarks"] = _general_used(matrix)
    out["definitions"] = dict(DEFINITIONS)
    if L < 1:
        return out

    n = L  # the (prefix) stream length the formulas see
    R = matrix.R[: n + 1, :n]

    def r(t: int, i: int) -> float:
        """R[t, i] with 1-based task index i, as written in the spec."""
        return float(R[t, i - 1])

    aps = [_mean(r(t, i) for i in range(1, t + 1)) for t in range(1, n + 1)]
    out["ap_per_stage"] = aps
    out["ap"] = aps[-1]
    out["aia"] = _mean(aps)
    out["la"] = _mean(r(i, i) for i in range(1, n + 1))
    if n >= 2:
        out["bwt"] = _mean(r(n, i) - r(i, i) for i in range(1, n))
        forgetting = [max(r(s, j) for s in range(j, n)) - r(n, j) for j in range(1, n)]
        out["forgetting_max"] = _mean(forgetting)
        out["forgetting_first"] = forgetting[0]
        out["fwt"] = _mean(r(i - 1, i) - r(0, i) for i in range(2, n + 1))

    ratios = []
    for i in range(1, n + 1):
        best = float(np.nanmax(R[:, i - 1]))  # evaluated stages only (eval.cells=needed)
        if best > 0:
            ratios.append(r(n, i) / best)
    out["normalized_avg"] = _mean(ratios) if ratios else None

    used = [matrix.general.index(m) for m in out["general_benchmarks"]]
    before, after = matrix.G[0, used], matrix.G[n, used]
    both = np.isfinite(before) & np.isfinite(after)
    if both.any():
        out["general_delta"] = float(np.mean(after[both] - before[both]))
    finite_after = after[np.isfinite(after)]
    if finite_after.size:
        g = float(np.mean(finite_after))
        a = out["ap"]
        out["f1_general_ap"] = 0.0 if g + a == 0 else 2.0 * g * a / (g + a)

    refs = references or {}
    seq, multi = refs.get("ap_sequential"), refs.get("ap_multitask")
    if out["complete"] and seq is not None and multi is not None and multi != seq:
        out["gap_closed"] = (out["ap"] - float(seq)) / (float(multi) - float(seq))
    return out


def _general_used(matrix: ScoreMatrix) -> list[str]:
    """General benchmarks on the 'higher is better' score scale (perplexity columns excluded)."""
    return [n for n in matrix.general if not lower_is_better(n, matrix.score_types.get(n, ""))]


def lower_is_better(name: str, kind: str = "") -> bool:
    """A perplexity or loss column, told by its score type or, where none was stored, its name."""
    lowered = name.lower()
    return kind.lower() in LOWER_IS_BETTER_TYPES or "perplexity" in lowered or "ppl" in lowered


def _mean(values: Any) -> float:
    vals = list(values)
    return float(sum(vals) / len(vals))


# ---- cost metrics from log.jsonl ----

COST_NAMES: tuple[str, ...] = (
    "optimizer_steps",
    "train_tokens",
    "train_samples",
    "train_tokens_per_s",
    "replayed_samples",
    "replayed_share",
    "general_share",
    "replay_events",
    "extra_forward_passes",
    "peak_memory_mb",
    "train_seconds",
    "eval_seconds",
    "cpu_seconds",
    "seconds_per_task",
    "tasks_timed_short",
)


def cost_summary(log_records: list[dict[str, Any]]) -> dict[str, Any]:
    """Cost metrics from `log.jsonl` records, so a method that wins by spending more shows it.

    Step records are keyed by `step` (the global optimizer-step count, 1-based); when a resumed
    run logs a step again, the last record of that step wins, and likewise for `eval` records
    per `stage` and `task_end` records per `task`.

    Totals of samples, replayed samples and tokens come from the cumulative `counters` of the
    `task_end` records (`samples`, `replayed_rows`, `tokens`) where present, else from summing
    the step records; throughput is logged tokens over logged step seconds, a fair sample
    also when the loop logs only every n-th step.
    """
    steps: dict[Any, dict[str, Any]] = {}
    evals: dict[Any, dict[str, Any]] = {}
    task_ends: dict[Any, dict[str, Any]] = {}
    events = 0
    for k, rec in enumerate(log_records):
        kind = rec.get("type")
        if kind == "step":
            steps[rec.get("step", ("index", k))] = rec
        elif kind == "eval":
            evals[rec.get("stage", ("index", k))] = rec
        elif kind == "task_end":
            task_ends[rec.get("task", ("index", k))] = rec
        elif kind == "replay_event":
            events += 1

    def total(records: Any, key: str) -> float:
        return float(sum(_num(r.get(key)) for r in records))

    step_recs = list(steps.values())
    numbered = [s for s in steps if isinstance(s, int | float) and not isinstance(s, bool)]
    step_seconds = total(step_recs, "seconds")
    logged_tokens = total(step_recs, "tokens")
    # counters are cumulative over the run (and restored on resume): the largest value seen in
    # any task_end record is the total; they are exact also when only every n-th step is logged
    counters: dict[str, float] = {}
    for rec in task_ends.values():
        for key, value in (rec.get("counters") or {}).items():
            counters[key] = max(counters.get(key, 0.0), _num(value))

    def counted(counter: str, field: str) -> float:
        return counters[counter] if counter in counters else total(step_recs, field)

    tokens = counted("tokens", "tokens")
    samples = counted("samples", "samples")
    replayed = counted("replayed_rows", "replayed")
    seconds_per_task = [_num(r.get("seconds")) for r in task_ends.values()]
    peaks = [float(r["peak_memory_mb"]) for r in task_ends.values() if r.get("peak_memory_mb")]
    short = timed_short(task_ends, step_recs)
    cost = {
        "optimizer_steps": int(max(numbered)) if numbered else len(step_recs),
        "train_tokens": int(tokens),
        "train_samples": int(samples),
        "train_tokens_per_s": logged_tokens / step_seconds if step_seconds > 0 else None,
        "replayed_samples": int(replayed),
        "replayed_share": replayed / samples if samples > 0 else None,
        "replay_events": events,
        "extra_forward_passes": int(counters.get("extra_forward_passes", 0)),
        "peak_memory_mb": max(peaks) if peaks else None,
        "train_seconds": None if short else (
            sum(seconds_per_task) if task_ends else step_seconds
        ),
        "eval_seconds": total(evals.values(), "seconds"),
        "cpu_seconds": None if short else _cpu_seconds(
            [*task_ends.values(), *(e for e in evals.values() if e.get("stage") != 0)]
        ),
        "seconds_per_task": seconds_per_task,
        "tasks_timed_short": short,
        "counters": {k: _plain(v) for k, v in counters.items()},
    }
    cost["general_share"] = general_share(cost)
    return cost


def timed_short(task_ends: dict[Any, dict[str, Any]], steps: list[dict[str, Any]]) -> list[Any]:
    """Tasks whose `task_end` seconds fall short of their own steps' logged seconds: resumed in
    mid-way by a retain before 2026-12-08, which timed only what the resumed process spent
    (now a checkpoint keeps the time spent before it). Their run's training time and CPU time
    are unknown (None), not understated."""
    logged: dict[Any, float] = {}
    for rec in steps:
        logged[rec.get("task")] = logged.get(rec.get("task"), 0.0) + _num(rec.get("seconds"))
    return [
        t for t, rec in task_ends.items()
        if t in logged and _num(rec.get("seconds")) + 1e-3 < logged[t]
    ]


def _cpu_seconds(records: list[dict[str, Any]]) -> float | None:
    """Training plus evaluation CPU time of the process (all its threads): unlike wall-clock,
    it hardly changes when other jobs share the machine. Row 0 (the untouched model) is left
    out: it is the same for every method, and in a bench only the first run scores it (the
    others read it from the cache), which would charge that one run alone. None for logs
    written before it was recorded, or where a record lacks it (a partial sum would
    understate the cost)."""
    values = [r.get("cpu_seconds") for r in records]
    if not values or any(not isinstance(v, int | float) for v in values):
        return None
    return float(sum(values))


def general_share(cost: dict[str, Any]) -> float | None:
    """Share of the training rows that were general-replay rows (GeRe's), from the counters;
    `replayed_share` counts replayed task rows only."""
    samples = cost.get("train_samples")
    if not samples:
        return None
    return float((cost.get("counters") or {}).get("general_rows", 0)) / samples


def _plain(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _num(value: Any) -> float:
    """A missing or non-numeric log field counts as 0 (older logs lack some fields)."""
    if isinstance(value, bool) or value is None:
        return 0.0
    try:
        x = float(value)
    except (TypeError, ValueError):
        return 0.0
    return x if math.isfinite(x) else 0.0
