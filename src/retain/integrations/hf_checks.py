"""What a user's Trainer set-up must satisfy before retain drives it, and which of its
`TrainingArguments` become the run's `train.*` settings.

Each refusal names the Trainer setting that breaks one of retain's assumptions and the fix; the
set-ups that are merely different are documented (README "Inside your own Trainer").
"""

from __future__ import annotations

from typing import Any

from retain.config import RunConfig, validate_config
from retain.data.encoding import SampleStore
from retain.data.task import TaskStream
from retain.methods.names import spec_of


class TrainerSetupError(ValueError):
    """A Trainer set-up retain cannot drive as asked; the message names the setting and fix."""


def _trainer_bases() -> tuple[type, ...]:
    """The trainers whose own `compute_loss` retain may replace: they only compute the LM loss
    of the batch (TRL's SFTTrainer adds metrics from it), which retain computes itself."""
    from transformers import Trainer

    bases: list[type] = [Trainer]
    try:
        from trl import SFTTrainer

        bases.append(SFTTrainer)
    except ImportError:
        pass
    return tuple(bases)


def adapter_methods(config: RunConfig) -> list[str]:
    return [m for m in config.methods if (s := spec_of(m)) is not None and s.needs_lora]


def check_trainer(trainer: Any, config: RunConfig) -> None:
    """Refuse set-ups that would silently change what the methods compute."""
    from peft import PeftModel

    name = type(trainer).__name__
    known = _trainer_bases()
    owner = next(
        c for c in type(trainer).__mro__
        if "compute_loss" in vars(c) and c.__name__ != "ContinualMixin"
    )
    if owner not in known:
        raise TrainerSetupError(
            f"{name}.compute_loss overrides the Trainer's loss: retain computes the loss itself "
            "(per-row answer-token losses, which its methods read) and would drop yours; "
            "remove the override, or add your term as a retain method (docs/adding-a-method.md)"
        )
    if getattr(trainer, "compute_loss_func", None) is not None:
        raise TrainerSetupError(
            f"{name}(compute_loss_func=...) replaces the loss retain computes per row for its "
            "methods; leave compute_loss_func unset"
        )
    if trainer.optimizer is not None or trainer.lr_scheduler is not None:
        raise TrainerSetupError(
            f"{name}(optimizers=...): retain builds one optimizer and schedule per task from "
            "TrainingArguments (optim, learning_rate, lr_scheduler_type, warmup_steps), as "
            "`retain run` does; pass optimizer_cls_and_kwargs instead of optimizer objects"
        )
    args = trainer.args
    if getattr(args, "load_best_model_at_end", False):
        raise TrainerSetupError(
            "TrainingArguments.load_best_model_at_end=True would reload an earlier checkpoint "
            "after a task, so retain would evaluate and export another model than it trained; "
            "set it to False"
        )
    if getattr(args, "n_gpu", 1) > 1:
        raise TrainerSetupError(
            f"TrainingArguments sees {args.n_gpu} GPUs in one process (DataParallel); retain "
            "needs one process per GPU: launch with `accelerate launch` or `torchrun`"
        )
    if trainer.processing_class is None or not callable(trainer.processing_class):
        raise TrainerSetupError(
            f"{name} has no tokenizer: pass processing_class=tokenizer, which retain encodes "
            "the stream with"
        )
    model = trainer.model
    if isinstance(model, PeftModel):
        kind = str(getattr(model.peft_config.get(model.active_adapter), "peft_type", "a"))
        kind = kind.rsplit(".", 1)[-1]
        wanted = adapter_methods(config)
        why = (
            f"{wanted[0]} builds its own adapter layers on the base model's linear layers"
            if wanted
            else "retain adds LoRA itself from model.lora (or trains every weight with "
            "model.finetune: full)"
        )
        raise TrainerSetupError(
            f"the Trainer's model is already a PeftModel ({kind} adapter); {why}: pass the "
            "base model (and no peft_config to SFTTrainer)"
        )


def check_ddp(trainer: Any, plugins: list[Any], processes: int) -> None:
    """Methods that freeze some of their parameters per task need DDP to expect unused ones
    (retain's own loop sets it; under the Trainer it is a TrainingArguments setting)."""
    names = [p.name for p in plugins if p.ddp_find_unused_parameters]
    if processes > 1 and names and not trainer.args.ddp_find_unused_parameters:
        raise TrainerSetupError(
            f"{names[0]} leaves some of its parameters without a gradient in some steps; under "
            "DDP set TrainingArguments(ddp_find_unused_parameters=True)"
        )


def trainer_max_length(trainer: Any) -> tuple[int, str] | None:
    """The longest row the Trainer's own data path would keep, and the setting that says so."""
    for owner, where in ((trainer.args, "args"), (trainer.data_collator, "data_collator")):
        for attr in ("max_length", "max_seq_length"):
            value = getattr(owner, attr, None)
            if isinstance(value, int) and value > 0:
                return value, f"{where}.{attr}"
    return None


def check_lengths(
    trainer: Any, store: SampleStore, stream: TaskStream, pools: list[list[int]]
) -> None:
    """Refuse a stream whose encoded rows the Trainer's own tokenisation would cut: retain feeds
    its rows whole (data.max_length), so a shorter limit there means the user expects another
    budget than the one that would train."""
    limit = trainer_max_length(trainer)
    if limit is None:
        return
    value, setting = limit
    for t, pool in enumerate(pools):
        for k, sid in enumerate(pool):
            n = len(store.input_ids[sid])
            if n > value:
                raise TrainerSetupError(
                    f"task {stream.tasks[t].name!r} train record {k} is {n} tokens, longer than "
                    f"the Trainer's {setting}={value}, which would cut it; raise {setting} to "
                    f"at least data.max_length, or lower data.max_length"
                )


def config_from_args(config: RunConfig, args: Any, model: Any = None) -> RunConfig:
    """The run's config with the optimisation settings the Trainer will use, so config.yaml,
    the resume check and the fingerprint describe what trained: TrainingArguments win for batch
    size, accumulation, learning rate, weight decay, clipping, warm-up (a ratio), precision and
    seed; the Trainer reports to its own trackers (retain's `train.report_to` is off); the
    model's own name (`config._name_or_path`), where it has one, is `model.name_or_path`, so
    `retain eval` loads the model that trained."""
    data = config.model_dump(mode="json")
    name = getattr(getattr(model, "config", None), "_name_or_path", "")
    if isinstance(name, str) and name:
        data["model"]["name_or_path"] = name
    train = data["train"]
    train["batch_size"] = int(args.per_device_train_batch_size)
    train["grad_accum"] = int(args.gradient_accumulation_steps)
    train["lr"] = float(args.learning_rate)
    train["weight_decay"] = float(args.weight_decay)
    clip = args.max_grad_norm
    train["max_grad_norm"] = float(clip) if clip is not None and clip > 0 else None
    train["mixed_precision"] = "bf16" if args.bf16 else "fp16" if args.fp16 else "no"
    train["report_to"] = "none"
    if float(args.warmup_steps) < 1:
        train["warmup_ratio"] = float(args.warmup_steps)
    data["seed"] = int(args.seed)
    return validate_config(data, source="TrainingArguments")
