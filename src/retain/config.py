"""Typed run configuration: YAML files plus `key=value` overrides, validated before anything runs.

Every section forbids unknown keys, so a typo fails at start-up with the key's dotted path and the
keys that are allowed there, instead of being silently ignored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from retain.config_base import Section
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
    "METHOD_NAMES",
    "REPLAY_METHODS",
    "ConfigError",
    "GeneralReplayConfig",
    "MSSRConfig",
    "OLoRAConfig",
    "ProCLConfig",
    "ReplayConfig",
    "RunConfig",
    "Section",
]

DEFAULT_DATA_DIR = "../shared/data"
"""Where the benchmark data are looked for when neither `data.data_dir` nor `RETAIN_DATA_DIR`
says: relative to the working directory, so a run from another folder should set one of them."""
DATA_DIR_ENV = "RETAIN_DATA_DIR"


def default_data_dir() -> str:
    """`$RETAIN_DATA_DIR` if set (and not empty), else `DEFAULT_DATA_DIR`."""
    return os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the key and what is allowed."""


class LoraConfig(Section):
    r: int = Field(8, gt=0)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"])


class ModelConfig(Section):
    name_or_path: str = "smollm2-135m"
    finetune: Literal["lora", "full"] = "lora"
    lora: LoraConfig = Field(default_factory=LoraConfig)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False
    cache_dir: str | None = None


class DataConfig(Section):
    """Which stream to run and how much of it: every stream runs on a subsample."""

    stream: str = Field(
        "builtin",
        description="a registered stream (`retain streams` lists them) or a YAML stream file, "
        "whose relative paths resolve against its own folder",
    )
    data_dir: str = Field(
        default_factory=default_data_dir,
        description="folder of the registered streams' data and the general suite; relative "
        "paths are taken from the working directory",
        json_schema_extra={"default_text": f"${DATA_DIR_ENV}, else {DEFAULT_DATA_DIR}"},
    )
    max_train_per_task: int | None = Field(
        None, gt=0, description="cap on train examples per task (seeded subsample); null: all"
    )
    max_test_per_task: int | None = Field(
        None, gt=0, description="cap on test examples per task (seeded subsample); null: all"
    )
    max_length: int = Field(256, gt=8, description="token limit of a training example")
    valid_per_task: int = Field(
        32,
        ge=0,
        description="validation examples per task (probes, model selection): carved from "
        "train, or taken from the task's own valid file; 0: none",
    )
    num_tasks: int | None = Field(None, gt=0, description="keep only the first N tasks")
    max_new_tokens: int | None = Field(
        None, gt=0, description="cap on generated tokens of every task"
    )
    subsample_seed: int = Field(
        0, description="seed of the subsamples and validation splits (not the run seed)"
    )


class TrainConfig(Section):
    steps_per_task: int | None = Field(100, gt=0)
    epochs_per_task: float | None = Field(None, gt=0)
    batch_size: int = Field(8, gt=0)
    grad_accum: int = Field(1, gt=0)
    lr: float = Field(2e-4, gt=0)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    lr_schedule: Literal["cosine", "constant"] = Field(
        "cosine",
        description="learning-rate schedule within each task after warm-up: cosine decay to 0, "
        "or constant (O-LoRA's setting)",
    )
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    mixed_precision: Literal["auto", "no", "fp16", "bf16"] = "auto"
    sharding: Literal["none", "fsdp2"] = Field(
        "none",
        description="fsdp2: retain shards the model itself with FSDP2 (fully_shard, one unit "
        "per decoder block) over all processes, CPU (gloo) or GPU; none: replicated (DDP)",
    )
    log_every: int = Field(1, gt=0)
    checkpoint_every: int = Field(
        0, ge=0, description="steps between mid-task checkpoints; 0: task ends only"
    )
    progress: bool = True
    report_to: Literal["none", "tensorboard", "wandb", "mlflow"] = Field(
        "none",
        description="also send step losses, replay events, evaluation rows and the final "
        "metrics to this tracker (through accelerate; files under the run directory)",
    )

    @model_validator(mode="after")
    def _one_length(self) -> TrainConfig:
        if (self.steps_per_task is None) == (self.epochs_per_task is None):
            raise ValueError(
                "set exactly one of train.steps_per_task and train.epochs_per_task "
                "(set the other to null)"
            )
        return self


class GeneralEvalConfig(Section):
    """The general-ability suite. Defaults sized to resolve a few points on a 135M model:
    570 MMLU questions (10 per subject, stratified), 500 ARC-Easy questions, 200 held-out
    WikiText-2 paragraphs (a replay set that overlaps them loses those rows, see GeRe)."""

    enabled: bool = False
    mmlu_per_subject: int = Field(10, ge=0)
    mmlu_subjects: list[str] | None = None
    arc_easy: int = Field(500, ge=0)
    wikitext_paragraphs: int = Field(200, ge=0)
    every_task: bool = Field(
        True,
        description="score the suite after every task; false: before the first and after the "
        "last task only, the rows general_delta and f1_general_ap use (a suite row costs "
        "about as much as the training of a small task on a CPU)",
    )


class EvalConfig(Section):
    batch_size: int = Field(16, gt=0)
    cells: Literal["all", "needed"] = Field(
        "needed",
        description="needed: row 0, the lower triangle and the superdiagonal (all that the "
        "metrics use, ~half the evaluation of a long stream); all: every task at every stage",
    )
    general: GeneralEvalConfig = Field(default_factory=GeneralEvalConfig)
    max_prompt_tokens: int | None = Field(
        None,
        gt=0,
        description="evaluation prompt budget; None: the model's context minus the answer's "
        "budget (max_new_tokens, or the longest option); only a passage is ever cut",
    )
    row0_cache: str | None = Field(
        None,
        description="folder where row 0 (the untouched model's scores) is kept and reused by "
        "runs with the same model, evaluation data and settings; `retain bench` sets it",
    )
    loglik_norm: Literal["sum", "bytes"] = Field(
        "bytes",
        description="log-likelihood accuracy the score matrix uses: 'sum' of option log-probs "
        "or 'bytes' (sum / UTF-8 bytes of the option); both are reported per example",
    )
    score: Literal["generate", "loglik"] | None = Field(
        None,
        description="primary score of tasks with options (the matrix's): the greedy answer by "
        "the task's string metric, or option log-likelihood; None: each task's own scoring "
        "(its stream's protocol). The other score is always computed and kept",
    )


class CoreConfig(Section):
    """The run's own sections; `RunConfig` adds one field per method config section."""

    name: str = "run"
    output_dir: str = "runs"
    seed: int = 42
    methods: list[str] = Field(default_factory=lambda: ["sequential"])
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _compatible_methods(self) -> CoreConfig:
        errors = combination_errors(self.methods, self.model.finetune)
        if errors:
            raise ValueError("methods: " + "; ".join(errors))
        return self

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        """The name is one directory under output_dir: nothing may escape or nest it."""
        if not name.strip():
            raise ValueError("must not be empty (it names the run directory under output_dir)")
        if name.startswith(("/", "\\")) or Path(name).is_absolute():
            raise ValueError(f"{name!r} is an absolute path; give a plain name, folders go in "
                             "output_dir")
        if "/" in name or "\\" in name:
            raise ValueError(f"{name!r} holds a path separator; give a plain name, folders go in "
                             "output_dir")
        if name in (".", ".."):
            raise ValueError("must not be '.' or '..'; give a plain name")
        return name

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name


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
        "eval.row0_cache",  # a cached row 0 equals the computed one (eval/row0_cache.py)
        "general.cache",  # GeRe's state cache in memory or memory-mapped: the same states
    }
)
"""Dotted config keys that cannot change a run's numbers: a resume may change them."""


def flat_keys(data: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as `{dotted.key: leaf}`."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        out.update(flat_keys(value, path) if isinstance(value, dict) else {path: value})
    return out


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
