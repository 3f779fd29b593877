"""Typed run configuration: YAML files plus `key=value` overrides, validated before anything runs.

Every section forbids unknown keys, so a typo fails at start-up with the key's dotted path and the
keys that are allowed there, instead of being silently ignored. `RunConfig` is the run's own
sections (`retain.config_sections`) plus one section per method as the method packages declare
them, so this module sits above `methods/` in the layers (docs/architecture.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model, model_validator

from retain.config_base import ConfigError, Section, flat_keys
from retain.config_sections import (
    DATA_DIR_ENV,
    DEFAULT_DATA_DIR,
    CoreConfig,
    DataConfig,
    EvalConfig,
    GeneralEvalConfig,
    LoraConfig,
    ModelConfig,
    TrainConfig,
    default_data_dir,
)
from retain.methods.gere.config import GeneralReplayConfig
from retain.methods.names import (
    METHOD_NAMES,
    REPLAY_METHODS,
    combination_errors,
    config_sections,
    method_sections,
    sections_used,
)
from retain.methods.olora.config import OLoRAConfig
from retain.methods.procl.config import ProCLConfig
from retain.methods.replay.config import MSSRConfig, ReplayConfig
from retain.yaml_io import BoundedLoader, excerpt, load_yaml, load_yaml_file

__all__ = [
    "DATA_DIR_ENV",
    "DEFAULT_DATA_DIR",
    "METHOD_NAMES",
    "REPLAY_METHODS",
    "ConfigError",
    "CoreConfig",
    "DataConfig",
    "EvalConfig",
    "GeneralEvalConfig",
    "GeneralReplayConfig",
    "LoraConfig",
    "MSSRConfig",
    "ModelConfig",
    "OLoRAConfig",
    "ProCLConfig",
    "ReplayConfig",
    "RunConfig",
    "Section",
    "TrainConfig",
    "default_data_dir",
    "flat_keys",
]

_MethodSections = create_model(
    "_MethodSections",
    __base__=CoreConfig,
    __module__=__name__,
    **{key: (cls, Field(default_factory=cls)) for key, cls in config_sections().items()},
)


class RunConfig(_MethodSections):  # type: ignore[misc, valid-type]
    """A run's configuration: its own sections, then one section per method config section
    as the method packages declare them (`retain.methods.names.config_sections`), so a new
    method's section appears here, in `retain config` and in docs/config.md without an edit to
    this file (docs/adding-a-method.md)."""

    @model_validator(mode="after")
    def _compatible_methods(self) -> RunConfig:
        errors = combination_errors(self.methods, self.model.finetune)
        if errors:
            raise ValueError("methods: " + "; ".join(errors))
        return self


MAX_ERRORS = 8
"""A message names at most this many invalid keys (a generated file may hold millions)."""


def _format_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for e in err.errors():
        if len(lines) > MAX_ERRORS:
            lines.append(f"  ... and {len(err.errors()) - MAX_ERRORS} more")
            break
        path = ".".join(str(p) for p in e["loc"]) or "<root>"
        if e["type"] == "extra_forbidden":
            section = _section_at(e["loc"][:-1])
            allowed = ", ".join(section.model_fields) if section else "?"
            lines.append(f"  {path}: unknown key; allowed here: {allowed}")
        else:
            got = e.get("input")
            shown = "" if isinstance(got, dict) else f" (got {excerpt(got)})"
            lines.append(f"  {path}: {e['msg']}{shown}")
    return "\n".join(lines)


def _section_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = RunConfig
    for key in loc:
        field = model.model_fields.get(str(key))
        if field is None or not isinstance(field.annotation, type):
            return None
        if not issubclass(field.annotation, BaseModel):
            return None
        model = field.annotation
    return model


_Loader = BoundedLoader
"""The loader configs are read with (retain.yaml_io: bounded aliases, exponent floats)."""


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=1e-4` -> (['train', 'lr'], 1e-4); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {excerpt(text)}: expected key=value, e.g. train.lr=1e-4")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {excerpt(text)}: empty key")
    try:
        value = load_yaml(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {excerpt(text)}: value is not valid YAML: {exc}") from None
    if key == "methods" and isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {excerpt(text)}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML file (optional), apply overrides, validate."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        try:
            loaded = load_yaml_file(Path(path), "config file")
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: expected a mapping at the top level")
        data = loaded
    if overrides:
        data = apply_overrides(data, overrides)
        source += " + overrides"
    return validate_config(data, source)


def validate_config(data: dict[str, Any], source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source)) from None


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


RESULT_NEUTRAL_KEYS: frozenset[str] = frozenset(
    {
        "name",  # where the run lives, not what it computes
        "output_dir",
        "data.data_dir",  # where the data are read from; their content is fingerprinted
        "model.cache_dir",  # where converted models are cached
        "train.progress",  # progress bars
        "train.report_to",  # where copies of the log go
        "train.log_every",  # how often a step is logged
        "train.checkpoint_every",  # resuming from any checkpoint reproduces the same run
        "eval.figures",  # the report's PNGs
        "eval.row0_cache",  # a cached row 0 equals the computed one (eval/row0_cache.py)
        "general.cache",  # GeRe's state cache in memory or memory-mapped: the same states
    }
)
"""Dotted config keys that cannot change a run's numbers: a resume may change them."""


def relevant_config(data: dict[str, Any]) -> dict[str, Any]:
    """A resolved config without the sections of methods it does not run (`mssr.*` cannot
    change a sequential run), so a bench re-runs only the runs a change affects."""
    methods = data.get("methods") or []
    unused = method_sections() - sections_used(list(methods))
    return {k: v for k, v in data.items() if k not in unused}


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`key: old → new` for every dotted key whose value differs, result-neutral keys and the
    sections of methods the run does not use skipped."""
    a, b = flat_keys(relevant_config(old)), flat_keys(relevant_config(new))
    missing = object()
    diffs = []
    for key in sorted(set(a) | set(b)):
        if key in RESULT_NEUTRAL_KEYS:
            continue
        x, y = a.get(key, missing), b.get(key, missing)
        if x != y:
            show = [("(absent)" if v is missing else _show(v)) for v in (x, y)]
            diffs.append(f"{key}: {show[0]} → {show[1]}")
    return diffs


def _show(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    text = text.removesuffix("...").strip()
    return text if len(text) <= 80 else text[:77] + "..."
