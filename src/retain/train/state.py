"""What a run has produced and where it stands, in one record: `RunState`.

Everything a checkpoint holds apart from the weights, the plugins' states, the generators and
the optimizer lives here (the score matrix, the per-example results, tied options, the counters,
the global step, the position, the data fingerprint and the log offset), so that saving and
restoring a run is `to_state()` / `from_state()` and nothing else rewrites trainer fields.

The plugin `Context` shows plugins the same counters (one dict, shared) and global step (set by
`share_with`, which the loop calls whenever the step changes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from retain.eval.evaluate import decoding_settings, score_type
from retain.eval.matrix import ScoreMatrix
from retain.storage.examples import ExampleResults

if TYPE_CHECKING:
    from retain.config import EvalConfig
    from retain.data.task import TaskStream
    from retain.methods.base import Context

PHASES = ("train", "done")
"""`train`: saved within a task (its optimizer comes along); `done`: after a task's row."""

REQUIRED = ("position", "global_step", "matrix", "counters", "log_offset", "examples")
"""Keys every checkpoint of this format holds; `ties`, `fingerprint` and `task_spent` came
later."""


class StateFormatError(ValueError):
    """A checkpoint's run state lacks a field or holds one of the wrong form."""


@dataclass(frozen=True)
class Position:
    """Where a checkpoint continues: in task `task` at its step `step` (`train`), or after the
    evaluation row of task `task` (`done`; task -1 is after row 0)."""

    task: int = -1
    step: int = 0
    phase: str = "done"

    def to_state(self) -> dict[str, Any]:
        return {"task": self.task, "step": self.step, "phase": self.phase}

    @classmethod
    def from_state(cls, data: Any) -> Position:
        if not isinstance(data, dict) or not {"task", "step", "phase"} <= set(data):
            raise StateFormatError(f"position must hold task, step and phase, not {data!r}")
        if data["phase"] not in PHASES:
            raise StateFormatError(f"position phase must be one of {PHASES}, not {data['phase']!r}")
        return cls(int(data["task"]), int(data["step"]), str(data["phase"]))

    def first_task(self) -> int:
        """The task training (re)starts with."""
        return self.task + 1 if self.phase == "done" else self.task

    def start_step(self, task: int) -> int:
        """The step task `task` starts at: the saved one in the task saved mid-way, else 0."""
        return self.step if self.phase == "train" and task == self.task else 0


@dataclass
class RunState:
    """The run's results and progress (module docstring)."""

    matrix: ScoreMatrix
    examples: ExampleResults = field(default_factory=ExampleResults)
    ties: dict[str, dict[str, int]] = field(default_factory=dict)
    """task -> stage -> examples whose options tied."""
    counters: dict[str, float] = field(default_factory=dict)
    global_step: int = 0
    position: Position = field(default_factory=Position)
    fingerprint: dict[str, Any] | None = None
    """The data fingerprint of the encoded stream the results belong to (results/fingerprint)."""
    log_offset: int = 0
    """The byte length of `log.jsonl` when the state was saved; a resume cuts the log there."""
    task_spent: dict[str, float] = field(default_factory=dict)
    """Mid-task (`train`): the `seconds` and `cpu_seconds` the task had spent up to the
    checkpoint, which a resumed task adds to its cost record (else a task interrupted in
    mid-way would record only what it spent after the resume)."""

    @classmethod
    def fresh(cls, stream: TaskStream, general: list[str], ev: EvalConfig) -> RunState:
        """An empty run: a matrix of the stream's tasks and general benchmarks, no results."""
        matrix = ScoreMatrix(stream.task_names, general, cells=ev.cells)
        for task in stream.tasks:
            matrix.score_types[task.name] = score_type(task, ev.loglik_norm, ev.score)
            matrix.decoding[task.name] = decoding_settings(task, ev.loglik_norm, ev.score)
        return cls(matrix)

    def share_with(self, ctx: Context) -> None:
        """Let plugins see this state's counters (the same dict) and global step."""
        ctx.counters = self.counters
        ctx.global_step = self.global_step

    def advance(self, ctx: Context) -> None:
        """One optimizer step done: the global step and the task's step move on."""
        self.global_step += 1
        ctx.global_step = self.global_step
        ctx.task_step += 1

    def to_state(self) -> dict[str, Any]:
        """The checkpoint's run-state keys (JSON and arrays; train/checkpoint.py stores them)."""
        return {
            "position": self.position.to_state(),
            "global_step": self.global_step,
            "matrix": self.matrix.to_json(),
            "counters": dict(self.counters),
            "log_offset": self.log_offset,
            "examples": self.examples.to_dict(),
            "ties": {task: dict(stages) for task, stages in self.ties.items()},
            "fingerprint": self.fingerprint,
            "task_spent": dict(self.task_spent),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RunState:
        """Inverse of `to_state`; reads every checkpoint written since fingerprints exist (older
        ones lack `ties` and `task_spent`). A missing or malformed field raises
        `StateFormatError` naming it."""
        missing = [key for key in REQUIRED if key not in state]
        if missing:
            raise StateFormatError(f"the run state lacks {', '.join(map(repr, missing))}")
        try:
            matrix = ScoreMatrix.from_json(state["matrix"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StateFormatError(f"matrix: {exc}") from None
        try:
            examples = ExampleResults.from_dict(state["examples"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StateFormatError(f"examples: {exc}") from None
        fingerprint = state.get("fingerprint")
        return cls(
            matrix=matrix,
            examples=examples,
            ties={task: dict(stages) for task, stages in (state.get("ties") or {}).items()},
            counters=dict(state["counters"]),
            global_step=int(state["global_step"]),
            position=Position.from_state(state["position"]),
            fingerprint=fingerprint if isinstance(fingerprint, dict) else None,
            log_offset=int(state["log_offset"]),
            task_spent={k: float(v) for k, v in (state.get("task_spent") or {}).items()},
        )
