"""The run's own configuration sections (model, data, train, eval) and `CoreConfig`, the run
without its methods' sections.

Below `data/`, `models/`, `eval/` and `methods/` in the layers (docs/architecture.md): they read
these sections. `retain.config.RunConfig` adds one section per method as the method packages
declare them; a method's plugin receives that run config, typed here as `CoreConfig`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from retain.config_base import Section

DEFAULT_DATA_DIR = "../shared/data"
"""Where the benchmark data are looked for when neither `data.data_dir` nor `RETAIN_DATA_DIR`
says: relative to the working directory, so a run from another folder should set one of them."""
DATA_DIR_ENV = "RETAIN_DATA_DIR"


def default_data_dir() -> str:
    """`$RETAIN_DATA_DIR` if set (and not empty), else `DEFAULT_DATA_DIR`."""
    return os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR


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
    figures: bool = Field(
        True,
        description="draw the run's PNG figures into report.html; false: the report keeps its "
        "tables only (a figure costs ~0.2 s of CPU: a bench of many small runs may skip them); "
        "`retain report RUN` draws them later",
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

    if TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any:
            """A method's section (`config.general`, `config.mssr`): `retain.config.RunConfig`
            adds them from the method packages' declarations, so a type checker sees Any."""
