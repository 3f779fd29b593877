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
from retain.train.resume import run_fingerprint

if TYPE_CHECKING:
    from retain.data.task import Example, Task
    from retain.eval.row import RowScores
    from retain.train.loop import ContinualTrainer


def _row(trainer: ContinualTrainer, stage: int) -> tuple[RowScores, bool]:
    """The stage's row, and whether it came from the bench's row-0 cache."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    cache = trainer.config.eval.row0_cache if stage == 0 else None
    key = ""
    if cache is not None:
        from retain.eval.row0_cache import load_row0, row0_key

        key = row0_key(trainer.config, run_fingerprint(trainer))
        cached = load_row0(Path(cache), key)
        if cached is not None:
            return cached, True
    every = trainer.config.eval.general.every_task
    last = trainer.matrix.num_tasks
    row = trainer.evaluator.evaluate(
        model,
        stage,
        trainer.matrix.needed_tasks(stage),
        shards(trainer.accelerator),
        with_general=every or stage in (0, last),
    )
    if cache is not None and trainer.is_main:
        from retain.eval.row0_cache import save_row0

        save_row0(Path(cache), key, row)
    return row, False


def evaluate_stage(trainer: ContinualTrainer, stage: int) -> None:
    """Score row `stage` (the tasks `eval.cells` needs and the general suite) and write it."""
    cpu_start = time.process_time()
    row, cached = _row(trainer, stage)
    cpu_seconds = time.process_time() - cpu_start
    trainer.matrix.set_row(stage, row.scores, row.general)
    ids = evaluator_ids(trainer.evaluator)  # what pairs runs example by example
    for name, result in row.examples.items():
        trainer.examples.set(stage, name, result.scores, extra=result.metrics, ids=ids.get(name))
        if result.ties:
            trainer.ties.setdefault(name, {})[str(stage)] = result.ties
    for name, (nll_sums, counts) in row.perplexity_parts.items():
        trainer.examples.set_perplexity(stage, name, nll_sums, counts, ids=ids.get(name))
    if trainer.is_main:
        trainer.matrix.to_csv(trainer.run_dir / "scores.csv")
        trainer.examples.save(trainer.run_dir / EXAMPLES_FILE)
        texts = {n: r.generations for n, r in row.examples.items() if r.generations}
        update_generations(trainer.run_dir / GENERATIONS_FILE, stage, texts)
    trainer.log.write(
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


def score_examples(trainer: ContinualTrainer, task: Task, examples: list[Example]) -> list[float]:
    """Probe scoring for methods (accuracy-triggered replay); counted as extra passes."""
    key = (task.name, len(examples))
    if key not in trainer.probe_sets:
        trainer.probe_sets[key] = encode_eval_set(
            trainer.tokenizer,
            task,
            examples,
            context_length=trainer.context_length,
            max_prompt_tokens=trainer.config.eval.max_prompt_tokens,
            split="valid",
        )
    data = trainer.probe_sets[key]
    trainer.ctx.count("extra_forward_passes", data.forward_passes)
    ev = trainer.config.eval
    model = trainer.accelerator.unwrap_model(trainer.model)  # the same weights on every rank
    return example_scores(model, trainer.tokenizer, data, ev.batch_size,
                          loglik_norm=ev.loglik_norm, score=ev.score)


def export_adapter(trainer: ContinualTrainer, t: int) -> None:
    """`adapters/task_<t+1>/`: standard PEFT format (or the adapter method's own export)."""
    from accelerate.utils import DistributedType

    from retain.models.adapters import save_adapter

    accelerator = trainer.accelerator
    state = None
    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        # sharded weights: gathered on every rank (a collective), written by the main one
        state = accelerator.get_state_dict(trainer.model)
    elif is_sharded(trainer.model):  # retain's own FSDP2 (train/fsdp.py), gathered alike
        state = full_model_state(trainer.model)
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(trainer.model)
        path = trainer.run_dir / "adapters" / f"task_{t + 1}"
        exporters = trainer.plugins_with("export_adapter")
        if exporters:  # at most one: the adapter method
            exporters[0].export_adapter(trainer.ctx, model, path, state_dict=state)
        else:
            save_adapter(model, path, state_dict=state)
