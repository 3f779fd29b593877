"""What `metrics.json` holds at the end of a run: the metrics from the score matrix (with
gap_closed references), cost from the log, 95 % CIs from the per-example results, truncation,
ties, scoring settings and the warnings a reader must see."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from retain.config import RunConfig
from retain.storage.examples import ExampleResults

if TYPE_CHECKING:
    from retain.train.components import Components
    from retain.train.state import RunState


def final_metrics(parts: Components, state: RunState) -> dict[str, Any]:
    """metrics.json: what the run's state says, with what the parts add (truncation, data
    warnings, the fingerprint that finds gap_closed references)."""
    from retain.eval.metrics import cost_summary
    from retain.results.references import metrics_with_references
    from retain.results.two_score_summary import two_score_summary
    from retain.storage.files import read_log

    matrix, run_dir, seed = state.matrix, parts.run_dir, parts.config.seed
    metrics = metrics_with_references(matrix, run_dir, parts.data_fingerprint())
    metrics["cost"] = cost_summary(read_log(run_dir / "log.jsonl"))
    metrics.update(uncertainty_summary(state.examples, matrix, seed))
    metrics.update(two_score_summary(state.examples, matrix.tasks, matrix.general, seed, run_dir))
    metrics["truncation"] = {
        name: {"train_prompts": parts.truncated_train.get(name, 0), "eval_prompts": n}
        for name, n in parts.evaluator.truncated_prompts.items()
    }
    metrics["ties"] = state.ties
    metrics["scoring"] = {
        name: {"score_type": matrix.score_types.get(name), "decoding": matrix.decoding.get(name)}
        for name in matrix.tasks
    }
    data_warnings = list(getattr(parts.stream, "warnings", []))  # e.g. valid overlaps test
    metrics["warnings"] = data_warnings + run_warnings(parts.config, state.counters)
    return metrics


def uncertainty_summary(examples: ExampleResults, matrix: Any, seed: int) -> dict[str, Any]:
    """95 % bootstrap CIs of the headline metrics over test examples, n per task and the plain
    warning when the test sets are too small to tell a few points from noise."""
    from retain.eval.seeds import noise_note
    from retain.eval.uncertainty import bootstrap_metrics

    ci = bootstrap_metrics(examples, matrix.tasks, matrix.general, n_resamples=1000, seed=seed)
    n_per_task = examples.n_per_task(matrix.tasks)
    return {
        "ci": {k: v for k, v in ci.items() if k != "ap_per_stage"},
        "ap_per_stage_ci": ci.get("ap_per_stage") or [],
        "n_per_task": n_per_task,
        "noise_note": noise_note(n_per_task),
    }


def run_warnings(config: RunConfig, counters: dict[str, float]) -> list[str]:
    """Results that look like something they are not, said plainly (log, CLI, report)."""
    from retain.config import REPLAY_METHODS

    warnings = []
    replay = [m for m in config.methods if m in REPLAY_METHODS]
    if replay and not counters.get("replayed_rows", 0):
        warnings.append(
            f"{replay[0]} replayed nothing in this run (no replay event fired or the budget was "
            "too small): its scores are those of plain sequential fine-tuning; raise "
            "replay.lam / replay.event_units, or lower replay.interval_units"
        )
    return warnings
