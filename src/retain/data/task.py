"""The data model every other part speaks: examples, tasks and streams."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, get_args

Metric = Literal[
    "accuracy",
    "exact_match",
    "olora_exact",
    "raw_exact",
    "contains",
    "token_f1",
    "math_exact",
    "choice_letter",
    "rouge_l",
    "edit_similarity",
    "bleu",
    "sari",
]
"""How a prediction is scored. `accuracy` is for log-likelihood choice among options; the others
are for generated text, each a per-example score in [0, 1] (`eval.answers.score_text`):
`olora_exact` is O-LoRA's exact match (lower-case, no punctuation, whitespace collapsed),
`raw_exact` TRACE's (the text as generated, only surrounding whitespace stripped),
`math_exact` compares final numbers, `choice_letter` the leading choice letter of an answer that
goes on to explain, `rouge_l` (summaries), `edit_similarity` (code completion), `bleu` (sentence
BLEU) and `sari` (simplification, against the example's `source_text`)."""

TEXT_METRICS: tuple[str, ...] = tuple(m for m in get_args(Metric) if m != "accuracy")

Scoring = Literal["loglik", "generate"]

MATH_STOP: tuple[str, ...] = ("Question:", "\n\n\n")
"""Default stop strings of `math_exact` tasks: a model that rambles on into a new question is
stopped there. A blank line is not one of them: six GSM8K reference solutions (train and test)
hold one; neither of these occurs in any of them (checked in `tests/test_answers.py`)."""


@dataclass(frozen=True)
class Example:
    """One prompt with its reference answer.

    `options` lists the candidate answers for log-likelihood scoring (the answer is one of them);
    it is None for open answers, which are scored on generated text.

    `context` is the character span [start, end) of the prompt's long passage, the only part that
    may be shortened to fit a token budget (from its end, see `encoding.fit_prompt`); None when
    the whole prompt is instruction or question, which is never cut.
    """

    prompt: str
    answer: str
    options: tuple[str, ...] | None = None
    context: tuple[int, int] | None = None
    original: str | None = None
    """The text an open answer rewrites (SARI's source sentence), when a record gives it."""

    def __post_init__(self) -> None:
        if self.context is not None:
            start, end = self.context
            if not 0 <= start <= end <= len(self.prompt):
                raise ValueError(
                    f"context span {self.context} does not lie inside a prompt of "
                    f"{len(self.prompt)} characters"
                )

    @property
    def source_text(self) -> str | None:
        """What SARI scores edits against: `original`, else the declared passage, else None."""
        if self.original is not None:
            return self.original
        if self.context is not None:
            return self.prompt[self.context[0] : self.context[1]]
        return None


@dataclass(frozen=True)
class TaskBudget:
    """Per-task settings from a stream file; None: the run's `train.*` / `data.*` value.

    Benchmarks train the tasks of one stream for different lengths (TRACE gives each task its
    own epochs), so a stream file may set them. The loop reads steps and learning rate through
    `task_steps` and `task_lr`; the caps are applied at load time (`streams.cap_task`, the
    smaller of this and `data.max_*_per_task`).
    """

    steps: int | None = None
    epochs: float | None = None
    lr: float | None = None
    max_train: int | None = None
    max_test: int | None = None

    def __post_init__(self) -> None:
        if self.steps is not None and self.epochs is not None:
            raise ValueError("a task budget sets steps or epochs, not both")
        for name in ("steps", "epochs", "lr", "max_train", "max_test"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"task budget {name} must be positive, got {value!r}")


def task_steps(
    budget: TaskBudget,
    steps_per_task: int | None,
    epochs_per_task: float | None,
    pool_size: int,
    samples_per_step: int,
) -> int:
    """Optimizer steps for one task: its own `steps`/`epochs` if set, else the run's.

    An epoch count becomes `ceil(epochs * pool_size / samples_per_step)`, at least 1.
    """
    if budget.steps is not None:
        return budget.steps
    epochs = budget.epochs
    if epochs is None:
        if steps_per_task is not None:
            return steps_per_task
        epochs = epochs_per_task
    if epochs is None:
        raise ValueError("no step budget: set train.steps_per_task or train.epochs_per_task")
    return max(1, math.ceil(epochs * pool_size / samples_per_step))


def task_lr(budget: TaskBudget, lr: float) -> float:
    """The task's own learning rate if its stream file sets one, else the run's `train.lr`."""
    return budget.lr if budget.lr is not None else lr


@dataclass
class Task:
    """A named dataset with train/test splits and the rule that scores it."""

    name: str
    train: list[Example]
    test: list[Example]
    scoring: Scoring = "loglik"
    metric: Metric = "accuracy"
    max_new_tokens: int = 32
    source: str = ""
    valid: list[Example] = field(default_factory=list)
    """Held out from train (never the test split): probes and model selection use it."""
    stop: tuple[str, ...] = ()
    """Generation ends at the first of these strings, which is cut from the text scored."""
    budget: TaskBudget = field(default_factory=TaskBudget)
    """Per-task steps / epochs / learning rate / caps from the stream file (None: the run's)."""
    data_warnings: tuple[str, ...] = ()
    """What about the data misleads without stopping a run (validation overlapping test)."""

    def __post_init__(self) -> None:
        if any(not s for s in self.stop):
            raise ValueError(f"task {self.name!r}: stop strings must not be empty")
        if self.scoring == "loglik" and self.metric != "accuracy":
            raise ValueError(
                f"task {self.name!r}: loglik scoring gives accuracy, not {self.metric}"
            )
        if self.scoring == "generate" and self.metric not in TEXT_METRICS:
            raise ValueError(
                f"task {self.name!r}: generated answers are scored by one of "
                f"{', '.join(TEXT_METRICS)}, not {self.metric}"
            )
        if self.metric == "sari":
            for split, examples in (("test", self.test), ("valid", self.valid)):
                for i, ex in enumerate(examples):
                    if ex.source_text is None:
                        raise ValueError(
                            f"task {self.name!r} {split}[{i}]: metric sari needs the source "
                            "sentence (Example.original or a declared context passage)"
                        )
        if self.scoring == "loglik":
            for split, examples in (
                ("train", self.train),
                ("test", self.test),
                ("valid", self.valid),
            ):
                for i, ex in enumerate(examples):
                    if not ex.options or ex.answer not in ex.options:
                        raise ValueError(
                            f"task {self.name!r} {split}[{i}]: loglik scoring needs options that "
                            f"contain the answer {ex.answer!r}, got {ex.options!r}"
                        )

    @property
    def decoding(self) -> dict[str, object]:
        """Decoding settings recorded beside each score."""
        if self.scoring == "loglik":
            return {"scoring": "loglik", "metric": self.metric}
        return {
            "scoring": "greedy",
            "max_new_tokens": self.max_new_tokens,
            "metric": self.metric,
            "stop": list(self.stop),
        }


@dataclass
class TaskStream:
    """An ordered list of tasks; the order is the order of training."""

    name: str
    tasks: list[Task] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """Every task's `data_warnings`, in order: the loader emits each as a `DataWarning`
        when it builds the task; the loop may log them too."""
        return [w for t in self.tasks for w in t.data_warnings]

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def __len__(self) -> int:
        return len(self.tasks)
