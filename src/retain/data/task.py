"""The data model every other part speaks: examples, tasks and streams."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Metric = Literal["accuracy", "exact_match", "contains", "token_f1", "math_exact"]
"""How a prediction is scored. `accuracy` is for log-likelihood choice among options; the others
are for generated text (`math_exact` extracts the final number first)."""

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

    def __post_init__(self) -> None:
        if self.context is not None:
            start, end = self.context
            if not 0 <= start <= end <= len(self.prompt):
                raise ValueError(
                    f"context span {self.context} does not lie inside a prompt of "
                    f"{len(self.prompt)} characters"
                )


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

    def __post_init__(self) -> None:
        if any(not s for s in self.stop):
            raise ValueError(f"task {self.name!r}: stop strings must not be empty")
        if self.scoring == "loglik" and self.metric != "accuracy":
            raise ValueError(
                f"task {self.name!r}: loglik scoring gives accuracy, not {self.metric}"
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
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def __len__(self) -> int:
        return len(self.tasks)
