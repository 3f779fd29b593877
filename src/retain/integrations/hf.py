"""retain's methods inside your own Hugging Face `Trainer` (or TRL `SFTTrainer`).

```python
trainer = Trainer(model=model, args=args, processing_class=tokenizer)   # your own Trainer
from retain.integrations.hf import Continual
cl = Continual(trainer, "examples/run.yaml", ["methods=[mssr]"])  # stream, methods, run dir
result = cl.train()          # task by task; evaluation after each; metrics.json, report, adapters
```

`Continual` attaches retain to the Trainer: it adds LoRA (or an adapter method's layers) to the
Trainer's model as `retain run` would, makes the Trainer compute retain's loss on retain's
rows (`ContinualMixin`, also usable as a base class of your own trainer), and adds a callback
for retain's end of step. `train()` then runs retain's loop (hf_driver.py): row 0, and for each
task `trainer.train()` with a fresh optimizer and schedule, retain's evaluation row, the
adapter, a checkpoint. What drives which setting, what is refused and why: README section
"Inside your own Trainer"; the checks: hf_checks.py.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from retain.config import RunConfig, load_config
from retain.data.task import TaskStream
from retain.integrations.hf_checks import (
    check_ddp,
    check_lengths,
    check_trainer,
    config_from_args,
)
from retain.integrations.hf_driver import ROWS_KEY, TrainerDriven
from retain.train.loop import RunResult

CHANGED_ARGS = ("max_steps", "learning_rate", "warmup_steps", "output_dir")
"""TrainingArguments retain sets per task (and restores after the stream)."""


class ContinualMixin:
    """Put before your Trainer class (`class T(ContinualMixin, Trainer)`); `Continual` does it
    for you. Inactive until attached: training batches from retain's loader get retain's loss,
    everything else (your evaluation, prediction) the Trainer's own."""

    _retain: TrainerDriven | None = None

    def get_train_dataloader(self) -> Any:
        driver = self._retain
        if driver is None or driver.task_run is None:
            return super().get_train_dataloader()  # type: ignore[misc]
        return driver.train_dataloader()

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        driver = self._retain
        if driver is None or ROWS_KEY not in inputs:
            return super().compute_loss(  # type: ignore[misc]
                model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        loss = driver.micro_loss(model)
        return (loss, None) if return_outputs else loss


@cache
def continual_class(cls: type) -> type:
    """`cls` with `ContinualMixin` in front (itself when it has it already)."""
    if issubclass(cls, ContinualMixin):
        return cls
    return type(cls.__name__, (ContinualMixin, cls), {"__module__": cls.__module__})


class RetainCallback(TrainerCallback):
    """retain's end of step after each optimizer step; retain's state beside each checkpoint."""

    def __init__(self, driver: TrainerDriven) -> None:
        self.driver = driver

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.driver.step_done()

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.driver.saved(int(state.global_step))


class Continual:
    """A stream, retain's methods and retain's run directory around a user's Trainer.

    `config`: a run config (YAML path or `RunConfig`) with `overrides` (`key=value`); the
    Trainer's model trains (named in the run's config by its own `_name_or_path` where it has
    one; `model.lora` / `model.finetune` apply). `stream`: a `TaskStream` instead of `data.*`;
    `overwrite`: clear a run directory that holds no checkpoint of this run. A run directory
    with a checkpoint of this run resumes.
    """

    def __init__(
        self,
        trainer: Any,
        config: str | Path | RunConfig | None = None,
        overrides: Sequence[str] = (),
        *,
        stream: TaskStream | None = None,
        overwrite: bool = False,
    ) -> None:
        if isinstance(config, RunConfig):
            if overrides:
                raise ValueError("overrides apply to a config file; edit the RunConfig instead")
            cfg = config
        else:
            cfg = load_config(config, list(overrides))
        check_trainer(trainer, cfg)
        cfg = config_from_args(cfg, trainer.args, trainer.model)
        self.trainer = trainer
        self._args = {name: getattr(trainer.args, name) for name in CHANGED_ARGS}
        trainer.__class__ = continual_class(type(trainer))
        random.seed(cfg.seed)  # as `retain run` does before it builds its trainer
        driver = TrainerDriven(cfg, trainer, stream=stream, overwrite=overwrite)
        try:
            parts = driver.parts
            check_lengths(trainer, parts.store, parts.stream, parts.ctx.task_samples)
            check_ddp(trainer, parts.plugins, parts.accelerator.num_processes)
        except BaseException:
            driver.close()
            raise
        self.driver = driver
        trainer.model = trainer.model_wrapped = driver.parts.model
        trainer.loss_is_scaled_for_ga = True  # retain's loss is the step's mean already
        trainer._retain = driver
        trainer.add_callback(RetainCallback(driver))

    @property
    def config(self) -> RunConfig:
        return self.driver.parts.config

    @property
    def model(self) -> torch.nn.Module:
        """The model the Trainer trains: the user's with retain's LoRA / adapter layers."""
        return self.driver.parts.model

    @property
    def run_dir(self) -> Path:
        return self.driver.parts.run_dir

    def train(self) -> RunResult:
        """Row 0, then every task: `trainer.train()`, evaluation row, adapter, checkpoint; the
        metrics and report at the end. Resumes from the run directory's checkpoint (a task cut
        short continues through the Trainer's `resume_from_checkpoint`)."""
        try:
            return self.driver.run()
        finally:
            self.driver.close()
            self.trainer._retain = None
            self.trainer.loss_is_scaled_for_ga = None
            for name, value in self._args.items():
                setattr(self.trainer.args, name, value)


def stream_dataset(
    config: str | Path | RunConfig | None = None,
    overrides: Sequence[str] = (),
    split: str = "train",
) -> Any:
    """The stream's `split` rows of every task as a `datasets.Dataset` of prompt/completion
    pairs, for trainers that require a dataset at construction (TRL's `SFTTrainer`) or an
    `eval_dataset` for the Trainer's own evaluation. retain trains from its own encoding of the
    stream, task by task, whatever `train_dataset` the Trainer holds."""
    from datasets import Dataset

    from retain.data.encoding import answer_text
    from retain.data.streams import load_stream

    cfg = config if isinstance(config, RunConfig) else load_config(config, list(overrides))
    rows = [
        {"prompt": ex.prompt, "completion": answer_text(ex.prompt, ex.answer)}
        for task in load_stream(cfg.data).tasks
        for ex in getattr(task, split)
    ]
    return Dataset.from_list(rows)
