"""The base of every configuration section, shared by `retain.config_sections`, `retain.config`
and the methods' own config modules (each method package keeps its config beside its code, as
PEFT's tuners do), and the error every layer raises for a configuration that cannot run."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key and what is allowed."""


class Section(BaseModel):
    """Strict types: YAML's `true` is no batch size and `1` no model name (ints still pass for
    floats); exponent floats such as `1e-4` are read as floats by `load_yaml`. `.inf` and `.nan`
    are refused everywhere: no setting (learning rate, weight, ratio, threshold) means anything
    non-finite, and an infinite learning rate trains a NaN model."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False
    )


def flat_keys(data: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as `{dotted.key: leaf}`."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        out.update(flat_keys(value, path) if isinstance(value, dict) else {path: value})
    return out
