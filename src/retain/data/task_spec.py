"""One task as data: `TaskSpec`, as registry entries and YAML stream files write it.

A spec names the files of a task, how to read its records (format and field mapping), how to
score it and its own training budget. Loading it into a `Task` is `task_loader.load_task`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from retain.data.task import Metric, Scoring, TaskBudget

Format = Literal["prompt_answer", "sentence_label", "alpaca", "multiple_choice", "gsm8k"]

FORMAT_FIELDS: dict[str, tuple[str, ...]] = {
    "prompt_answer": ("prompt", "answer"),
    "sentence_label": ("sentence", "label"),
    "alpaca": ("instruction", "input", "output", "answer"),
    "multiple_choice": ("question", "choices", "answer"),
    "gsm8k": ("question", "answer"),
}
"""The record keys each format reads; `<key>_field` in a spec reads that key from another one."""

MAPPABLE = sorted({k for keys in FORMAT_FIELDS.values() for k in keys})


class DataWarning(UserWarning):
    """Data that load but mislead, such as a validation split that overlaps the test split."""


def _text(value: Any, what: str) -> Any:
    """Whole numbers become their digits; booleans are refused with the value shown, since
    YAML 1.1 readers turn unquoted yes/no/on/off/true/false into them."""
    if isinstance(value, bool):
        raise ValueError(
            f"{what} {value!r} is a boolean, not text: YAML reads unquoted true/false (and, in "
            "YAML 1.1 readers, yes/no/on/off) as booleans; quote it, e.g. 'yes'"
        )
    if isinstance(value, int):
        return str(value)
    return value


class TaskSpec(BaseModel):
    """One task of a stream, as written in a registry entry or a YAML stream file.

    Relative paths resolve against the base folder of the stream (see module docstring);
    `hf:<id>[:<config>]:<split>` reads a Hub dataset. Unset `scoring`/`metric`/
    `max_new_tokens`/`stop` follow from the format: examples with options are scored by
    log-likelihood (accuracy), others by greedy generation (exact match; `math_exact`, 256 new
    tokens and `MATH_STOP` for gsm8k). For a task with options `scoring` names the primary
    score only: both are computed (`eval.two_scores`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # no .inf lr

    name: str = Field(min_length=1)
    train: str
    test: str
    valid: str | None = Field(
        None, description="validation file (model selection, probes); must not overlap test"
    )
    format: Format
    labels: str | list[str] | None = Field(
        None, description="labels.json path or an inline list (prompt_answer, sentence_label)"
    )
    instruction: str | None = Field(None, description="task instruction (sentence_label)")
    scoring: Scoring | None = Field(
        None,
        description="the primary score of a task with options (loglik: option log-likelihood; "
        "generate: the greedy answer by `metric`), the other being computed and kept too; "
        "None: loglik with options, generate without",
    )
    metric: Metric | None = None
    max_new_tokens: int | None = Field(None, gt=0)
    drop_answers: tuple[str, ...] = Field(
        (), description="records with this answer/label are dropped (e.g. '-': no gold label)"
    )
    stop: list[Annotated[str, Field(min_length=1)]] | None = Field(
        None,
        description="generation stops at the first of these strings; None: MATH_STOP for "
        "math_exact tasks, none otherwise; [] turns the default off",
    )
    prompt_field: str | None = None
    answer_field: str | None = None
    sentence_field: str | None = None
    label_field: str | None = None
    instruction_field: str | None = None
    input_field: str | None = None
    output_field: str | None = None
    question_field: str | None = None
    choices_field: str | None = None
    source_field: str | None = Field(
        None, description="record key holding the text the answer rewrites (SARI's source)"
    )
    context_pattern: str | None = Field(
        None,
        description="regex whose group `context` (or group 1) is the prompt's passage: the only "
        "part cut to fit a token budget, and SARI's source when no source_field is given",
    )
    steps: int | None = Field(None, gt=0, description="optimizer steps on this task")
    epochs: float | None = Field(None, gt=0, description="epochs on this task (or steps)")
    lr: float | None = Field(None, gt=0, description="learning rate on this task")
    max_train: int | None = Field(None, gt=0, description="cap on train examples")
    max_test: int | None = Field(None, gt=0, description="cap on test examples")

    @field_validator("labels", "drop_answers", "stop", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return [_text(v, "value") for v in value]
        return _text(value, "value")

    @field_validator("instruction", mode="before")
    @classmethod
    def _instruction_text(cls, value: Any) -> Any:
        return _text(value, "instruction")

    @field_validator("context_pattern")
    @classmethod
    def _one_group(cls, pattern: str | None) -> str | None:
        if pattern is None:
            return None
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        if not compiled.groups:
            raise ValueError("needs a group around the passage, e.g. 'Text: (?P<context>.*)\\n'")
        return pattern

    @model_validator(mode="after")
    def _consistent(self) -> TaskSpec:
        if self.steps is not None and self.epochs is not None:
            raise ValueError("set steps or epochs for a task, not both")
        wrong = [k for k in self.field_mapping if k not in FORMAT_FIELDS[self.format]]
        if wrong:
            allowed = ", ".join(f"{k}_field" for k in FORMAT_FIELDS[self.format])
            raise ValueError(
                f"{', '.join(f'{k}_field' for k in wrong)} do not apply to format "
                f"{self.format}; it reads {allowed}"
            )
        return self

    @property
    def field_mapping(self) -> dict[str, str]:
        """Format key -> the record key it is read from, for the keys this spec remaps."""
        out = {}
        for key in MAPPABLE:
            value = getattr(self, f"{key}_field")
            if value is not None:
                out[key] = value
        return out

    @property
    def budget(self) -> TaskBudget:
        return TaskBudget(
            steps=self.steps,
            epochs=self.epochs,
            lr=self.lr,
            max_train=self.max_train,
            max_test=self.max_test,
        )
