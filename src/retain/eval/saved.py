"""Evaluation of a saved run: its config, the backbone and a stored adapter."""

from __future__ import annotations

import sys
from pathlib import Path

from retain.config import ConfigError, RunConfig, apply_overrides, load_yaml, validate_config


def saved_run_config(
    run_dir: Path, overrides: list[str] | None = None, trust_remote_code: bool = False
) -> RunConfig:
    """The run's config as it is now found: located where the directory is, and with
    `trust_remote_code` only as the user grants it (a run directory may come from anyone)."""
    run_dir = Path(run_dir)
    path = run_dir / "config.yaml"
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path} ({exc.strerror}); give a run directory that "
                          "retain wrote") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    data["name"], data["output_dir"] = run_dir.name, str(run_dir.parent)
    wanted = bool((data.get("model") or {}).get("trust_remote_code"))
    granted = f"model.trust_remote_code={str(trust_remote_code).lower()}"
    data = apply_overrides(data, [*(overrides or []), granted])
    if wanted and not trust_remote_code:
        print(f"note: {path} enables model.trust_remote_code; it stays off unless you pass "
              "--trust-remote-code", file=sys.stderr)
    return validate_config(data, str(path))


def evaluate_saved_run(
    run_dir: Path,
    task: int | None = None,
    overrides: list[str] | None = None,
    trust_remote_code: bool = False,
) -> dict[str, float]:
    """Scores (0–100) of every task of the run's stream with the adapter after `task`."""
    from retain.data.streams import load_stream
    from retain.eval.evaluate import encode_eval_set, task_score
    from retain.models.adapters import load_adapter
    from retain.models.loading import load_backbone

    config = saved_run_config(run_dir, overrides, trust_remote_code)
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
    stream = load_stream(config.data)
    return {
        t.name: task_score(
            model,
            tokenizer,
            encode_eval_set(tokenizer, t, t.test, config.data.max_length),
            config.eval.batch_size,
            loglik_norm=config.eval.loglik_norm,
            score=config.eval.score,
        )
        for t in stream.tasks
    }
