"""Re-scoring a saved run (`retain eval RUN`): its config, the backbone and a stored adapter.

In `results/`, above `retain.config` in the layers (docs/architecture.md): it validates the
saved config as a whole run config, method sections included."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from retain.config import ConfigError, RunConfig, apply_overrides, validate_config
from retain.yaml_io import load_yaml_file


def saved_run_config(
    run_dir: Path, overrides: list[str] | None = None, trust_remote_code: bool = False
) -> RunConfig:
    """The run's config as it is now found: located where the directory is, and with
    `trust_remote_code` only as the user grants it (a run directory may come from anyone)."""
    run_dir = Path(run_dir)
    path = run_dir / "config.yaml"
    try:
        data = load_yaml_file(path, "run config")
    except OSError as exc:
        raise ConfigError(f"cannot read {path} ({exc.strerror}); give a run directory that "
                          "retain wrote") from None
    except ValueError as exc:
        raise ConfigError(f"{exc}; the run directory's config.yaml is damaged: restore it "
                          "from the run's source, or give a run directory that retain wrote"
                          ) from None
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


def _saved_model(model: Any, chosen: Path) -> Any:
    """The backbone with the adapter saved in `chosen`; a damaged file is named with the fix."""
    from safetensors import SafetensorError

    from retain.models.adapters import load_adapter

    try:
        if (chosen / "adapter_config.json").exists():
            return load_adapter(model, chosen)
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(str(chosen))
    except (SafetensorError, OSError, ValueError, KeyError) as exc:
        detail = " ".join(str(exc).split())[:160]
        raise ConfigError(
            f"{chosen} holds a damaged adapter ({type(exc).__name__}: {detail}; check "
            "adapter_config.json and adapter_model.safetensors there); restore the folder "
            "from a copy, or evaluate another task's adapter with --task"
        ) from None


def evaluate_saved_run(
    run_dir: Path,
    task: int | None = None,
    overrides: list[str] | None = None,
    trust_remote_code: bool = False,
) -> dict[str, float]:
    """Scores (0–100) of every task of the run's stream with the adapter after `task`."""
    from retain.data.streams import load_stream
    from retain.eval.evaluate import encode_eval_set, task_score
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
    model = _saved_model(model, chosen)
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
