"""What the loop evaluates and writes out between tasks: the evaluation row of a stage, the
probe scoring methods ask for, and the adapter exported after each task.

Kept apart from the training loop: a row is scored on the unwrapped model (DDP's wrapper has no
`generate`, and evaluation needs no gradient sync), sharded across ranks, and written to
`scores.csv`, `examples.npz` and `generations.jsonl.gz` at once, so an interrupted run never
loses a finished row.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from retain.eval.evaluate import encode_eval_set, example_scores
from retain.models.sharding import is_sharded
from retain.storage.example_ids import evaluator_ids
from retain.storage.examples import EXAMPLES_FILE
from retain.storage.generations import GENERATIONS_FILE, update_generations
from retain.train.distributed import shards
from retain.train.fsdp import full_model_state

if TYPE_CHECKING:
    from retain.data.task import Example, Task
    from retain.eval.row import RowScores
    from retain.train.components import Components
    from retain.train.state import RunState


def _row(parts: Components, state: RunState, stage: int) -> tuple[RowScores, bool]:
    """The stage's row, and whether it came from the bench's row-0 cache."""
    model = parts.inner_model()
    cache = parts.config.eval.row0_cache if stage == 0 else None
    key = ""
    if cache is not None:
        from retain.eval.row0_cache import load_row0, row0_key

        key = row0_key(parts.config, parts.data_fingerprint())
        cached = load_row0(Path(cache), key)
        if cached is not None:
            return cached, True
    every = parts.config.eval.general.every_task
    last = state.matrix.num_tasks
    row = parts.evaluator.evaluate(
        model,
        stage,
        state.matrix.needed_tasks(stage),
        shards(parts.accelerator),
        with_general=every or stage in (0, last),
    )
    if cache is not None and parts.is_main:
        from retain.eval.row0_cache import save_row0

        save_row0(Path(cache), key, row)
    return row, False


def evaluate_stage(parts: Components, state: RunState, stage: int) -> None:
    """Score row `stage` (the tasks `eval.cells` needs and the general suite), record it in
    `state` and write it."""
    cpu_start = time.process_time()
    row, cached = _row(parts, state, stage)
    cpu_seconds = time.process_time() - cpu_start
    state.matrix.set_row(stage, row.scores, row.general)
    ids = evaluator_ids(parts.evaluator)  # what pairs runs example by example
    for name, result in row.examples.items():
        state.examples.set(stage, name, result.scores, extra=result.metrics, ids=ids.get(name))
        if result.ties:
            state.ties.setdefault(name, {})[str(stage)] = result.ties
    for name, (nll_sums, counts) in row.perplexity_parts.items():
        state.examples.set_perplexity(stage, name, nll_sums, counts, ids=ids.get(name))
    if parts.is_main:
        state.matrix.to_csv(parts.run_dir / "scores.csv")
        state.examples.save(parts.run_dir / EXAMPLES_FILE)
        texts = {n: r.generations for n, r in row.examples.items() if r.generations}
        update_generations(parts.run_dir / GENERATIONS_FILE, stage, texts)
    parts.log.write(
        {
            "type": "eval",
            "stage": stage,
            "scores": row.scores,
            "general": row.general,
            "seconds": row.seconds,
            "cpu_seconds": cpu_seconds,
            "cached": cached,
        }
    )


def score_examples(parts: Components, task: Task, examples: list[Example]) -> list[float]:
    """Probe scoring for methods (accuracy-triggered replay); counted as extra passes."""
    key = (task.name, len(examples))
    if key not in parts.probe_sets:
        parts.probe_sets[key] = encode_eval_set(
            parts.tokenizer,
            task,
            examples,
            context_length=parts.context_length,
            max_prompt_tokens=parts.config.eval.max_prompt_tokens,
            split="valid",
        )
    data = parts.probe_sets[key]
    parts.ctx.count("extra_forward_passes", data.forward_passes)
    ev = parts.config.eval
    model = parts.inner_model()  # the same weights on every rank
    return example_scores(model, parts.tokenizer, data, ev.batch_size,
                          loglik_norm=ev.loglik_norm, score=ev.score)


def export_adapter(parts: Components, t: int) -> None:
    """`adapters/task_<t+1>/`: standard PEFT format (or the adapter method's own export)."""
    from accelerate.utils import DistributedType

    from retain.models.adapters import save_adapter

    accelerator = parts.accelerator
    state = None
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        # sharded weights: gathered on every rank (a collective), written by the main one
        state = accelerator.get_state_dict(parts.model)
    elif is_sharded(parts.model):  # retain's own FSDP2 (train/fsdp.py), gathered alike
        state = full_model_state(parts.model)
    if accelerator.is_main_process:
        model = parts.inner_model()
        path = parts.run_dir / "adapters" / f"task_{t + 1}"
        exporters = parts.plugins_with("export_adapter")
        if exporters:  # at most one: the adapter method
            exporters[0].export_adapter(parts.ctx, model, path, state_dict=state)
        else:
            save_adapter(model, path, state_dict=state)
