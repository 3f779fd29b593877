"""The run's records also go to the experiment trackers users already run (TensorBoard,
Weights & Biases, MLflow) through accelerate's tracker integration; `log.jsonl` stays the
source of truth, trackers get flat numeric copies."""

from __future__ import annotations

from typing import Any

from retain.config_base import ConfigError, flat_keys

TRACKED_RECORDS = {"step": "train", "eval": "eval", "replay_event": "replay", "task_end": "task"}
"""Record type of `log.jsonl` -> tracker namespace."""


def flat_numbers(value: Any, prefix: str) -> dict[str, float]:
    """Every int/float leaf of a nested record as `prefix/key/subkey` (bools and None left out)."""
    out: dict[str, float] = {}
    if isinstance(value, dict):
        for key, item in value.items():
            out.update(flat_numbers(item, f"{prefix}/{key}"))
    elif isinstance(value, int | float) and not isinstance(value, bool):
        out[prefix] = float(value)
    return out


PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
"""`train.report_to` -> the package it needs (accelerate drops a missing one with a warning)."""


def check_tracker(report_to: str) -> None:
    """Refuse, before the run starts, a tracker whose package is not installed: accelerate
    would only warn, and the run would end with nothing tracked."""
    if report_to == "none":
        return
    from accelerate.utils import is_mlflow_available, is_tensorboard_available, is_wandb_available

    available = {
        "tensorboard": is_tensorboard_available,
        "wandb": is_wandb_available,
        "mlflow": is_mlflow_available,
    }
    if not available[report_to]():
        raise ConfigError(
            f"train.report_to={report_to}, but the {PACKAGES[report_to]} package is not "
            f"installed; pip install {PACKAGES[report_to]}, or set train.report_to=none"
        )


class Trackers:
    """Forwards log records to `accelerator.log`; a no-op when `train.report_to` is none."""

    def __init__(self, accelerator: Any, enabled: bool, project: str, config: dict) -> None:
        self.accelerator = accelerator
        self.enabled = enabled
        self.step = 0
        if enabled:
            accelerator.init_trackers(project, config=flat_config(config))

    def __call__(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        kind = record.get("type")
        if kind not in TRACKED_RECORDS:
            return
        if isinstance(record.get("step"), int) and kind == "step":
            self.step = int(record["step"])
        body = {k: v for k, v in record.items() if k not in ("type", "step")}
        values = flat_numbers(body, TRACKED_RECORDS[kind])
        if values:
            self.accelerator.log(values, step=self.step)

    def final(self, metrics: dict[str, Any]) -> None:
        """The headline metrics of the finished run, then close the trackers."""
        if not self.enabled:
            return
        keys = ("ap", "aia", "la", "bwt", "forgetting_max", "fwt", "general_delta", "gap_closed")
        values = {f"final/{k}": float(metrics[k]) for k in keys if metrics.get(k) is not None}
        self.accelerator.log(values, step=self.step)
        self.accelerator.end_training()


def flat_config(config: dict[str, Any]) -> dict[str, Any]:
    """Trackers take flat hyper-parameters of plain types: nested keys dotted, lists as text."""
    return {
        k: str(v) if v is None or isinstance(v, list | tuple) else v
        for k, v in flat_keys(config).items()
    }
