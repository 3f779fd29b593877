"""The base of every configuration section, shared by `retain.config` and the methods' own
config modules (each method package keeps its config beside its code, as PEFT's tuners do)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Strict types: YAML's `true` is no batch size and `1` no model name (ints still pass for
    floats); exponent floats such as `1e-4` are read as floats by `load_yaml`. `.inf` and `.nan`
    are refused everywhere: no setting (learning rate, weight, ratio, threshold) means anything
    non-finite, and an infinite learning rate trains a NaN model."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False
    )
