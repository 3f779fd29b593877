"""The parts a run is built from, in one record: `Components` (built by train/build.py).

Model, plugins, plugin context, encoded data, evaluator, accelerator, log and run-directory
lock: what evaluation, checkpoints, the step and the outcome read. They change nothing here
but the probe-set cache and the fingerprint cache; what a run produces is `RunState`
(train/state.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from retain.methods.base import overrides
from retain.storage.fingerprint import data_fingerprint

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator

    from retain.config import RunConfig
    from retain.data.encoding import SampleStore
    from retain.data.task import TaskStream
    from retain.eval.evaluate import EncodedEvalSet
    from retain.eval.row import RowEvaluator
    from retain.methods.base import Context, Plugin
    from retain.storage.rundir import RunLock, RunLog
    from retain.storage.trackers import Trackers


@dataclass
class Components:
    """One run's parts (module docstring)."""

    config: RunConfig
    accelerator: Accelerator
    lock: RunLock
    """Held for the life of the run (train/resume.py `open_run_dir`)."""
    stream: TaskStream
    tokenizer: Any
    model: torch.nn.Module
    """Prepared for training: wrapped by accelerate (DDP) or sharded (train/fsdp.py)."""
    plugins: list[Plugin]
    ctx: Context
    store: SampleStore
    """Every encoded training row; `ctx.task_samples` holds each task's ids into it."""
    evaluator: RowEvaluator
    log: RunLog
    trackers: Trackers
    truncated_train: dict[str, int]
    """Training prompts cut to fit `data.max_length`, per task."""
    context_length: int
    full_logits: bool
    """Whether the training forward projects every position onto the vocabulary."""
    hidden_source: torch.nn.Module | None
    """The decoder stack whose last hidden state `StepOutputs.final_hidden` carries."""
    peak_memory_scope: str
    """"process" where the peak could not be reset: it may then include earlier runs' peaks."""
    probe_sets: dict[tuple[str, int], EncodedEvalSet] = field(default_factory=dict)
    _fingerprint: dict[str, Any] | None = None

    @property
    def run_dir(self) -> Path:
        return Path(self.config.run_dir)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def is_main(self) -> bool:
        return bool(self.accelerator.is_main_process)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    def inner_model(self) -> torch.nn.Module:
        """The model without its distributed wrapper (same parameters)."""
        return self.accelerator.unwrap_model(self.model)

    def plugins_with(self, hook: str) -> list[Plugin]:
        """The plugins that implement `hook`, in composition order."""
        return [p for p in self.plugins if overrides(p, hook)]

    def data_fingerprint(self) -> dict[str, Any]:
        """The data fingerprint of the encoded stream, computed once."""
        if self._fingerprint is None:
            self._fingerprint = data_fingerprint(
                self.config,
                self.store,
                self.ctx.task_samples,
                self.evaluator.task_sets,
                self.evaluator.general,
            )
        return self._fingerprint
