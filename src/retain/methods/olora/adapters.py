"""Model surgery for O-LoRA: the current task's LoRA is a PEFT adapter, earlier tasks' LoRAs
are frozen beside it, and the whole is exported as one merged standard PEFT adapter.

As in the official code (`lora` frozen + `loranew` trained), each LoRA layer carries the current
task's adapter `new` (PEFT's, trainable, re-initialised at every task start) and `past_tasks`:
the stacked factors of every finished task, frozen parameters that PEFT never touches (its
adapter switching, e.g. `disable_adapter()`, re-enables gradients of its own adapters only).
A forward hook adds the past tasks' LoRAs, so a forward sums all of them.

Export: ranks concatenated, `A = [A_1; …; A_t]`, `B = [B_1 … B_t]`, with `r·t` and `α·t`, so
the scaling α/r is unchanged and `B A = Σ_j B_j A_j` exactly.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ADAPTER = "new"
"""PEFT adapter name of the current task's LoRA (the official code's `loranew`)."""
PAST = "past_tasks"
"""Submodule of each LoRA layer that holds the finished tasks' factors (no `lora_` in the
name, so PEFT's own state-dict helpers never mistake it for an adapter)."""


class PastTasks(nn.Module):
    """Finished tasks' LoRA factors of one layer, stacked by rank: `A` (capacity × d_in),
    `B` (d_out × capacity); the first `rows` ranks are filled. Frozen: they never train."""

    def __init__(self, capacity: int, d_in: int, d_out: int) -> None:
        super().__init__()
        self.A = nn.Parameter(torch.zeros(capacity, d_in), requires_grad=False)
        self.B = nn.Parameter(torch.zeros(d_out, capacity), requires_grad=False)
        self.rows = 0

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.A[: self.rows], self.B[:, : self.rows]


def _add_past_tasks(
    layer: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: torch.Tensor
) -> torch.Tensor:
    """Forward hook of a LoRA layer: add `scaling · B_past A_past dropout(x)` (nothing while
    PEFT's adapters are disabled, e.g. a teacher forward of the base model)."""
    past: PastTasks = getattr(layer, PAST)
    if past.rows == 0 or layer.disable_adapters:  # type: ignore[attr-defined]
        return output
    x = args[0] if args else kwargs["x"]
    a, b = past.factors()
    dropout = layer.lora_dropout[ADAPTER]  # type: ignore[attr-defined,index]
    delta = F.linear(F.linear(dropout(x.to(a.dtype)), a), b)
    return output + (delta * layer.scaling[ADAPTER]).to(output.dtype)  # type: ignore[attr-defined,index]


def lora_layers(model: nn.Module, adapter: str) -> list[tuple[str, nn.Module]]:
    """PEFT's LoRA layers that hold `adapter`, by module name."""
    from peft.tuners.lora import LoraLayer

    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, LoraLayer) and adapter in module.lora_A
    ]


def add_task_adapter(model: nn.Module, rank: int) -> None:
    """Replace the run's LoRA adapter by O-LoRA's `new` one of rank `olora.rank` (α, dropout and
    target modules as `model.lora`)."""
    from peft import PeftModel

    if not isinstance(model, PeftModel) or "default" not in model.peft_config:
        raise ValueError("olora needs model.finetune: lora (a PEFT LoRA model to extend)")
    config = dataclasses.replace(model.peft_config["default"], r=rank)
    model.add_adapter(ADAPTER, config)
    model.set_adapter(ADAPTER)
    model.delete_adapter("default")


def attach_past_tasks(model: nn.Module, capacity_tasks: int) -> list[tuple[str, nn.Module]]:
    """Give every LoRA layer room for `capacity_tasks` finished tasks' factors and the hook
    that adds them; returns the layers by name."""
    layers = lora_layers(model, ADAPTER)
    for _, layer in layers:
        a = layer.lora_A[ADAPTER].weight
        b = layer.lora_B[ADAPTER].weight
        rank = a.shape[0]
        past = PastTasks(capacity_tasks * rank, a.shape[1], b.shape[0]).to(a.device, a.dtype)
        layer.add_module(PAST, past)
        layer.register_forward_hook(_add_past_tasks, with_kwargs=True)
    return layers


@torch.no_grad()
def archive_current(layers: list[tuple[str, nn.Module]], slot: int) -> None:
    """Copy the current task's factors into past slot `slot` (its rows stay frozen after)."""
    for _, layer in layers:
        a = layer.lora_A[ADAPTER].weight
        b = layer.lora_B[ADAPTER].weight
        past: PastTasks = getattr(layer, PAST)
        rank = a.shape[0]
        start = slot * rank
        past.A[start : start + rank].copy_(a)
        past.B[:, start : start + rank].copy_(b)
        past.rows = start + rank


@torch.no_grad()
def reset_current(layers: list[tuple[str, nn.Module]], generator: torch.Generator) -> None:
    """A fresh LoRA for the new task, initialised as PEFT does (A Kaiming-uniform, B zero),
    drawn from `generator` so that a resumed run draws the same."""
    for _, layer in layers:
        a = layer.lora_A[ADAPTER].weight
        fresh = torch.empty(a.shape)
        nn.init.kaiming_uniform_(fresh, a=math.sqrt(5), generator=generator)
        a.copy_(fresh)
        layer.lora_B[ADAPTER].weight.zero_()


def merged_adapter(
    model: nn.Module,
    layers: list[tuple[str, nn.Module]],
    state_dict: dict[str, torch.Tensor] | None = None,
) -> tuple[Any, dict[str, torch.Tensor]]:
    """The PEFT config and weights of one LoRA that equals the sum of all tasks' LoRAs.

    `state_dict` (gathered under FSDP/ZeRO-3) is read instead of the module's tensors.
    """

    def get(name: str, tensor: torch.Tensor) -> torch.Tensor:
        return state_dict[name] if state_dict is not None else tensor

    weights: dict[str, torch.Tensor] = {}
    tasks = 0
    for name, layer in layers:
        past: PastTasks = getattr(layer, PAST)
        rows = past.rows
        a_new = get(f"{name}.lora_A.{ADAPTER}.weight", layer.lora_A[ADAPTER].weight)
        b_new = get(f"{name}.lora_B.{ADAPTER}.weight", layer.lora_B[ADAPTER].weight)
        a_past = get(f"{name}.{PAST}.A", past.A)[:rows].to(a_new.dtype)
        b_past = get(f"{name}.{PAST}.B", past.B)[:, :rows].to(b_new.dtype)
        weights[f"{name}.lora_A.weight"] = torch.cat([a_past, a_new]).detach().cpu().contiguous()
        weights[f"{name}.lora_B.weight"] = (
            torch.cat([b_past, b_new], dim=1).detach().cpu().contiguous()
        )
        tasks = rows // a_new.shape[0] + 1
    base = model.peft_config[ADAPTER]
    config = dataclasses.replace(
        base, r=base.r * tasks, lora_alpha=base.lora_alpha * tasks, inference_mode=True
    )
    return config, weights


def save_merged_adapter(
    model: nn.Module,
    layers: list[tuple[str, nn.Module]],
    path: Path,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write the merged adapter as PEFT's `save_pretrained` lays it out."""
    from peft.utils import SAFETENSORS_WEIGHTS_NAME
    from safetensors.torch import save_file

    config, weights = merged_adapter(model, layers, state_dict)
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(out))
    save_file(weights, str(out / SAFETENSORS_WEIGHTS_NAME), metadata={"format": "pt"})
    return out
