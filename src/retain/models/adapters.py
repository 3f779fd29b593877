"""Decide which parameters train (LoRA or full), and save / restore exactly those.

Checkpoints store only `trainable_state_dict` (a few MB for LoRA instead of the whole model);
`save_adapter` writes the standard PEFT layout so other tools can load the result.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, TaskType, get_peft_model
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from retain.config_sections import ModelConfig

ALL_LINEAR = "all-linear"
_PEFT_DEPRECATION = ".*is_gradient_checkpointing"


def linear_module_names(model: nn.Module) -> list[str]:
    """Leaf names of the linear layers (e.g. `q_proj`), the names LoRA `target_modules` use."""
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name
    }
    return sorted(names)


def check_target_modules(model: nn.Module, targets: list[str]) -> None:
    """Fail before PEFT does, naming the linear layers that exist: PEFT's own error for a typo
    lists nothing useful."""
    if targets == [ALL_LINEAR]:
        return
    linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in linear)]
    if missing:
        raise ValueError(
            f"model.lora.target_modules: {missing} match no linear layer of "
            f"{type(model).__name__}; available: {', '.join(linear_module_names(model))} "
            f"(or [{ALL_LINEAR}])"
        )


def prepare_for_finetuning(model: PreTrainedModel, cfg: ModelConfig) -> nn.Module:
    """The model to train: wrapped with LoRA (base frozen; the base model is modified in place)
    for `finetune: lora`, or with every parameter trainable for `finetune: full`."""
    if isinstance(model, PeftModel):
        raise ValueError("model is already prepared for fine-tuning (it is a PeftModel)")
    if cfg.finetune == "full":
        for param in model.parameters():
            param.requires_grad_(True)
        return model
    lora = cfg.lora
    check_target_modules(model, lora.target_modules)
    targets: list[str] | str = (
        ALL_LINEAR if lora.target_modules == [ALL_LINEAR] else list(lora.target_modules)
    )
    peft_config = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        task_type=TaskType.CAUSAL_LM,
    )
    was_training = model.training
    with warnings.catch_warnings():
        # peft 0.21 calls an API transformers 5 deprecated; not actionable for users
        warnings.filterwarnings("ignore", message=_PEFT_DEPRECATION, category=FutureWarning)
        peft_model = get_peft_model(model, peft_config)
    # PEFT leaves its new wrappers in train mode over an eval-mode model; keep one mode.
    peft_model.train(was_training)
    return peft_model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts, for logs and reports."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def trainable_state_dict(model: nn.Module, copy: bool = True) -> dict[str, torch.Tensor]:
    """The parameters that train, by name: LoRA weights for PEFT models, all for full FT.

    `copy=True` returns detached clones (a snapshot that later steps do not change);
    `copy=False` returns detached views sharing memory, enough to write a checkpoint at once.
    Tied weights appear once (`named_parameters` skips duplicates).
    """
    state: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            state[name] = param.detach().clone() if copy else param.detach()
    return state


def load_trainable_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy `state` into the model's trainable parameters; names and shapes must match exactly,
    so a checkpoint from another model or fine-tuning mode fails loudly."""
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(params) - set(state))
    unexpected = sorted(set(state) - set(params))
    if missing or unexpected:
        raise ValueError(
            "trainable state does not match the model: "
            f"{len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    for name, param in params.items():
        value = state[name]
        if value.shape != param.shape:
            raise ValueError(
                f"trainable state: {name} has shape {tuple(value.shape)}, "
                f"the model expects {tuple(param.shape)}"
            )
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(state[name].to(device=param.device, dtype=param.dtype))


def save_adapter(
    model: nn.Module,
    path: str | Path,
    tokenizer: PreTrainedTokenizerBase | None = None,
    state_dict: dict[str, Any] | None = None,
) -> Path:
    """Write the fine-tuned result in standard formats: a PEFT adapter folder
    (`adapter_config.json`, `adapter_model.safetensors`) for LoRA, a safetensors model folder for
    full fine-tuning. `state_dict` is a consolidated state (FSDP/ZeRO-3 shard the weights, so
    the loop gathers them with `accelerator.get_state_dict` first). The tokenizer, if given, is
    saved beside it."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    if not isinstance(model, (PeftModel, PreTrainedModel)):
        raise TypeError(f"cannot save a {type(model).__name__}; expected a PEFT or HF model")
    if state_dict is None:
        model.save_pretrained(out)
    else:
        model.save_pretrained(out, state_dict=state_dict)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out


def load_adapter(model: PreTrainedModel, path: str | Path, trainable: bool = False) -> PeftModel:
    """Attach a saved LoRA adapter to a freshly loaded base model."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_PEFT_DEPRECATION, category=FutureWarning)
        return PeftModel.from_pretrained(model, str(path), is_trainable=trainable)
