"""Evaluation of a saved run: its config, the backbone and a stored adapter."""

from __future__ import annotations

from pathlib import Path

from retain.config import load_config


def evaluate_saved_run(
    run_dir: Path, task: int | None = None, overrides: list[str] | None = None
) -> dict[str, float]:
    """Scores (0–100) of every task of the run's stream with the adapter after `task`."""
    from retain.data.streams import load_stream
    from retain.eval.evaluate import encode_eval_set, task_score
    from retain.models.adapters import load_adapter
    from retain.models.loading import load_backbone

    config = load_config(Path(run_dir) / "config.yaml", overrides)
    adapters = sorted(
        (Path(run_dir) / "adapters").glob("task_*"), key=lambda p: int(p.name.split("_")[1])
    )
    if not adapters:
        raise FileNotFoundError(f"{run_dir}/adapters holds no task_<i> adapter")
    chosen = adapters[-1] if task is None else Path(run_dir) / "adapters" / f"task_{task}"
    if not chosen.exists():
        raise FileNotFoundError(f"{chosen} does not exist")
    model, tokenizer = load_backbone(config.model)
    if (chosen / "adapter_config.json").exists():
        model = load_adapter(model, chosen)
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(chosen))
    stream = load_stream(config.data, config.seed)
    return {
        t.name: task_score(
            model,
            tokenizer,
            encode_eval_set(tokenizer, t, t.test, config.data.max_length),
            config.eval.batch_size,
        )
        for t in stream.tasks
    }
