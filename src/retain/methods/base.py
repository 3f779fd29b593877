"""The plugin interface: how a continual-learning method hooks into the training loop.

A method overrides only the hooks it needs; the loop calls a hook only on plugins that override
it, so an unused hook costs nothing on the per-step path. Several plugins run together: batch
composition and data hooks run in plugin order, extra losses are summed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from retain.data.encoding import Batch, BatchPlan, SampleStore, collate
from retain.methods.services import FrozenCopy, T, all_reduce, process_share, processes

if TYPE_CHECKING:
    from retain.config_sections import CoreConfig
    from retain.data.task import Example, Task, TaskStream

HOOKS = (
    "wrap_model",
    "on_stream_start",
    "task_data",
    "on_task_start",
    "compose_step",
    "compose_batch",
    "extra_loss",
    "after_step",
    "on_task_end",
    "export_adapter",
)


@dataclass
class StepOutputs:
    """What the loop's forward pass produced, shared with plugins (no second forward).

    `per_sample_loss` is the token-averaged NLL of each row; `final_hidden` ([rows, length,
    dim], the backbone's last hidden state: output of the final norm, input of `lm_head`) is only
    filled when some plugin sets `needs_hidden_states`, `logits` ([rows, length, vocab]) only when
    some plugin sets `needs_logits`. `extra_loss` sees them with grad;
    `after_step` (which runs after the optimizer step) sees a detached copy without logits or
    hidden states.
    """

    logits: torch.Tensor | None
    per_sample_loss: torch.Tensor
    answer_tokens: torch.Tensor
    task_loss: torch.Tensor
    final_hidden: torch.Tensor | None = None

    def detached(self) -> StepOutputs:
        return StepOutputs(
            logits=None,
            per_sample_loss=self.per_sample_loss.detach(),
            answer_tokens=self.answer_tokens,
            task_loss=self.task_loss.detach(),
        )


@dataclass
class Context:
    """The run as plugins see it. Plugins read it; only the loop advances the counters."""

    config: CoreConfig
    stream: TaskStream
    store: SampleStore
    task_samples: list[list[int]]
    device: torch.device
    model: Any = None
    tokenizer: Any = None
    task_index: int = -1
    task_step: int = 0
    steps_in_task: int = 0
    global_step: int = 0
    counters: dict[str, float] = field(default_factory=dict)
    log_event: Callable[[dict[str, Any]], None] = lambda event: None
    score_examples: Callable[[Task, list[Example]], list[float]] | None = None
    """Scores examples of a task with the current model (for probe-based methods); each call
    adds its forward passes to `counters['extra_forward_passes']`."""
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext
    """The training forward's autocast context, so a plugin that computes targets from the
    model (GeRe) runs the very same numerics as the step it will be compared with."""
    inner_model: Any = None
    """The training model without its distributed wrapper (same parameters as `model`): a
    forward through it synchronises nothing across processes."""
    pad_id: int = 0
    forward_fn: Callable[..., tuple[StepOutputs, torch.Tensor]] | None = None
    """The loop's training forward (`train.step.forward`); use `forward`."""
    fixed_params: frozenset[int] = frozenset()
    """ids of the parameters that cannot change for the rest of the run (the backbone's under
    LoRA), which a frozen copy shares instead of copying."""
    kept_positions: bool = True
    """Whether the model can project only the answer positions (`logits_to_keep`)."""

    def bind_model(
        self,
        inner: torch.nn.Module,
        backbone: list[torch.nn.Parameter],
        forward_fn: Callable[..., tuple[StepOutputs, torch.Tensor]],
        pad_id: int,
        kept_positions: bool,
    ) -> None:
        """Called by the loop once the model is prepared: `inner` is it without its
        distributed wrapper, `backbone` the loaded model's parameters before any adapter;
        those still in the model and frozen never change (LoRA) and are shared by copies."""
        from retain.models.sharding import successors

        backbone = successors(inner, backbone)  # sharded (fsdp2): the DTensors that replaced them
        current = {id(p): p for p in inner.parameters()}
        self.inner_model, self.forward_fn, self.pad_id = inner, forward_fn, pad_id
        self.kept_positions = kept_positions
        self.fixed_params = frozenset(
            id(p) for p in backbone if current.get(id(p)) is p and not p.requires_grad
        )

    def count(self, name: str, value: float = 1.0) -> None:
        self.counters[name] = self.counters.get(name, 0.0) + value

    # ------------------------------------------------------------ services (methods/services.py)
    def rows(self, sample_ids: Sequence[int]) -> Batch:
        """Stored rows (`store` ids) as one right-padded batch on the run's device."""
        ids = [int(i) for i in sample_ids]
        return collate(self.store, BatchPlan(ids, [False] * len(ids)), self.pad_id).to(
            self.device
        )

    def forward(
        self,
        batch: Batch,
        model: torch.nn.Module | None = None,
        logits: bool = False,
        hidden: bool = False,
    ) -> StepOutputs:
        """The training forward on `batch`: per-row mean answer-token NLL, answer tokens and
        the batch's token-mean loss (`task_loss`), with `logits` [rows, length, vocab] and the
        backbone's final hidden state (`final_hidden`) when asked; under the training autocast
        and through the training step's model call, so targets computed here match a training
        forward's numbers; through `model` (default: the training model without its
        distributed wrapper). Gradients flow unless the caller disables them."""
        from retain.models.hidden import decoder_module, unwrap_parallel

        assert self.forward_fn is not None, "the loop binds the forward before training"
        model = model or self.inner_model
        decoder = decoder_module(unwrap_parallel(model)) if hidden else None
        with self.autocast():
            outputs, _ = self.forward_fn(model, batch, decoder, logits or not self.kept_positions)
        return outputs

    def frozen_copy(self) -> FrozenCopy:
        """The current model, frozen and in eval mode (a teacher); see `FrozenCopy`."""
        return FrozenCopy(self.inner_model, self.fixed_params)

    def reduce(
        self, tensors: list[torch.Tensor], op: Literal["sum", "mean"] = "mean"
    ) -> list[torch.Tensor]:
        """Element-wise sum or mean of `tensors` over the run's processes (identity in one)."""
        return all_reduce(tensors, op)

    @property
    def processes(self) -> int:
        """How many processes train the run; a global batch is `processes` local ones."""
        return processes()

    def shard(self, items: Sequence[T]) -> list[T]:
        """This process's share of `items`, for work that `reduce(..., "sum")` adds up."""
        return process_share(items)


class Plugin:
    """Base class of every method. Override the hooks you need; keep per-step hooks cheap."""

    name: str = "plugin"
    needs_hidden_states: bool = False
    needs_logits: bool = False
    """True when `extra_loss` reads `StepOutputs.logits`; otherwise the loop projects only the
    answer positions through `lm_head` and `logits` is None."""
    wraps_model: bool = False
    """True for adapter methods that replace the model's layers; two such plugins conflict."""
    ddp_find_unused_parameters: bool = False
    """True when some parameter it trains gets no gradient in some steps (frozen per task or
    unused in task 1): DDP must then look for unused parameters."""
    loss_weighting: Literal["micro_batch", "each_micro_batch", "answer_tokens", "general_rows"] = (
        "micro_batch"
    )
    """How the loop weights `extra_loss`: `micro_batch`, a per-micro-batch mean averaged over
    the step's micro-batches; `each_micro_batch`, added unscaled to every micro-batch's loss
    (a step then carries it `grad_accum` times, as O-LoRA's reference code does);
    `answer_tokens`, a sum over the micro-batch's answer tokens scaled like the task NLL (so
    the step holds its mean over the step's task answer tokens, exact under any split into
    micro-batches and processes);
    `general_rows`, a mean over the micro-batch's general-text rows (`task_of` -1), weighted
    by those rows' share of the step's rows, as if each such row carried it alone (GeRe's
    per-row semantics, docs/methods/gere.md)."""

    fsdp2_unsupported: str | None = None
    """Why the method cannot run under `train.sharding=fsdp2` yet (a run is refused at start,
    with this reason); None: it can."""

    ce_per_micro_batch: bool = False
    """True: the step's CE is taken per micro-batch, as HF Trainer and GeRe's reference code
    take it (`gere_paper`): each micro-batch's loss is the mean of its task rows' and its
    general rows' token-mean CE (of the groups it holds), averaged over the step's
    micro-batches; otherwise the token means are over the whole step (train/step.py)."""

    def __init__(self, config: CoreConfig) -> None:
        self.config = config

    def wrap_model(self, ctx: Context, model: torch.nn.Module) -> torch.nn.Module:
        """Model surgery, once, before accelerate wraps the model: an adapter method creates
        every parameter it will ever train here (later tasks only change which train), so
        distributed wrappers and checkpoints see one fixed set of parameters."""
        return model

    def on_stream_start(self, ctx: Context) -> None:
        """Before row 0 is evaluated; the untouched model is in `ctx.model`."""

    def task_data(self, ctx: Context, task_index: int, sample_ids: list[int]) -> list[int]:
        """The training pool of a task (e.g. multitask widens it, GeRe adds general text)."""
        return sample_ids

    def on_task_start(self, ctx: Context, task: Task) -> None:
        """Before the task's optimizer is built (so parameters frozen or thawed here count).
        On a resume in mid-task it runs after `load_state_dict`: keep the restored state."""

    def reserved_rows(self, ctx: Context) -> int:
        """Rows of every global batch this plugin fills in `compose_step`; the loop draws that
        many fewer task rows per optimizer step (and sizes epochs by the task rows)."""
        return 0

    def compose_step(self, ctx: Context, plan: BatchPlan, rows: int) -> BatchPlan:
        """Complete the task rows of one whole optimizer step (all micro-batches, all processes)
        to `rows` rows, before the step is cut into micro-batches and `compose_batch` runs."""
        return plan

    def compose_batch(self, ctx: Context, plan: BatchPlan) -> BatchPlan:
        """Edit the rows of the next batch; the batch size must stay the same."""
        return plan

    def extra_loss(
        self, ctx: Context, batch: Batch, outputs: StepOutputs
    ) -> dict[str, torch.Tensor]:
        """Named losses (already weighted) added to the task loss."""
        return {}

    def after_step(self, ctx: Context, batch: Batch, outputs: StepOutputs) -> None:
        """After the optimizer step (memory updates, schedules, consolidation)."""

    def on_task_end(self, ctx: Context, task: Task) -> None:
        """After the last step of a task, before its evaluation row."""

    def export_adapter(
        self,
        ctx: Context,
        model: torch.nn.Module,
        path: Path,
        state_dict: dict[str, Any] | None = None,
    ) -> None:
        """Write the adapter after a task in standard PEFT format (`models.adapters.save_adapter`
        otherwise), for methods whose layers are not one plain PEFT LoRA (e.g. O-LoRA's per-task
        adapters, merged into one). `state_dict`: the gathered state under FSDP/ZeRO-3."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly: tensors, numpy arrays and JSON values."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Called on resume before the model's trainable parameters are restored by name, so a
        plugin sets `requires_grad` (and restores frozen tensors) as they were when saved."""


def overrides(plugin: Plugin, hook: str) -> bool:
    """Whether the plugin implements `hook` (so the loop can skip the rest)."""
    return getattr(type(plugin), hook) is not getattr(Plugin, hook)
