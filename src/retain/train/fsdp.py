"""FSDP2 (`torch.distributed.fsdp.fully_shard`) applied by retain itself (`train.sharding: fsdp2`).

accelerate's own FSDP integration needs an accelerator device: on CPU it silently wraps the
model in DDP instead. So retain shards the model itself, over a one-dimensional device mesh of
all processes (gloo on CPU, NCCL on GPUs), while accelerate keeps starting the processes and
handling precision (autocast, the fp16 grad scaler). What CI tests on two CPU processes is then
the very code GPU users run.

Each decoder block is one FSDP unit and the root holds the rest (embeddings, head). Outside
training the loop needs the whole weights: evaluation shards examples across ranks (unequal
forward counts would deadlock per-forward all-gathers), and the export and the checkpoint hold
full tensors. `gathered` unshards every unit once for such a phase. Checkpoints stay
consolidated (full trainable weights and optimizer state written by the main process), so a
sharded run resumes on any number of processes and its files read like every other run's.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from retain.models.sharding import (
    is_sharded,
    record_successors,
)

if TYPE_CHECKING:
    from accelerate import Accelerator

FSDP_SHARDING = "fsdp2"


def _block_classes(model: nn.Module) -> set[str]:
    """Class names of the model's repeated blocks (transformers' `_no_split_modules`)."""
    for module in model.modules():
        names = getattr(module, "_no_split_modules", None)
        if names:
            return set(names)
    return set()


def _process_group(device: torch.device) -> int:
    """The world size; a single process gets a one-rank group of its own so that the same
    sharded code runs there too (accelerate starts none for one process)."""
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    return dist.get_world_size()


_REPLICATED: weakref.WeakKeyDictionary[nn.Module, list[nn.Parameter]] = (
    weakref.WeakKeyDictionary()
)
"""Per sharded model: the parameters left whole on every rank (`shard_model`'s `replicated`)."""


def replicated_parameters(plugins: list[Any]) -> list[nn.Parameter]:
    """Parameters plugins rewrite in place outside the optimizer (ProCL's consolidation and
    task resets): sharded, those writes would need every plugin to speak DTensor, so they stay
    whole and replicated, their gradients averaged like DDP's (`sync_replicated_grads`)."""
    found: dict[int, nn.Parameter] = {}
    for plugin in plugins:
        for param in getattr(plugin, "replicated_parameters", list)():
            found[id(param)] = param
    return list(found.values())


def refuse_rank_local_forwards(plugins: list[Any]) -> None:
    """Sharded, every forward is a collective, so every rank must run the same forwards. GeRe's
    KL/L1/L2 losses under LoRA run the base model (adapter off) on the general rows of a
    rank's own micro-batch only: another rank would wait forever. Refused at start instead."""
    for plugin in plugins:
        why = getattr(plugin, "fsdp2_unsupported", None)
        if why:
            raise ValueError(
                f"train.sharding=fsdp2 cannot run {plugin.name} yet: {why}; use "
                "train.sharding=none (DDP) for it"
            )
        loss = getattr(plugin, "loss", None)
        if loss in ("kl", "l1", "l2") and getattr(plugin, "teacher_cached", True) is False:
            raise ValueError(
                f"train.sharding=fsdp2 cannot run {plugin.name} (general.loss {loss}) with "
                "model.finetune=lora: its teacher forward runs on one rank's rows only, which "
                "would deadlock the sharded ranks; use gere (tm), model.finetune=full, or "
                "train.sharding=none"
            )


def shard_model(
    model: nn.Module, accelerator: Accelerator, plugins: list[Any] | None = None
) -> nn.Module:
    """`model` on the accelerator's device, each decoder block and then the root sharded over
    every process; the plugins' `replicated_parameters` stay whole on every rank.

    Frozen and trainable parameters (LoRA) share units: FSDP2 keeps `requires_grad` per
    parameter, so the optimizer sees exactly the trainable ones, as a shard per rank."""
    from accelerate.utils import DistributedType
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        raise ValueError(
            f"train.sharding=fsdp2: the launcher configured accelerate for "
            f"{accelerator.distributed_type.value}, which would shard a second time; launch "
            "with torchrun or configs/accelerate/fsdp.yaml, or set train.sharding=none"
        )
    plugins = plugins or []
    refuse_rank_local_forwards(plugins)
    device = accelerator.device
    world = _process_group(device)
    mesh = init_device_mesh(device.type, (world,))
    model.to(device)
    blocks = _block_classes(model)
    units = [m for m in model.modules() if type(m).__name__ in blocks]
    if not units:
        raise ValueError(
            f"train.sharding=fsdp2: {type(model).__name__} names no repeated blocks "
            "(_no_split_modules), so retain cannot choose FSDP units; use train.sharding=none"
        )
    ignored = set(replicated_parameters(plugins))
    before = {id(p): name for name, p in model.named_parameters()}
    for unit in units:
        fully_shard(unit, mesh=mesh, reshard_after_forward=True, ignored_params=ignored)
    fully_shard(model, mesh=mesh, ignored_params=ignored)
    if ignored:
        _REPLICATED[model] = [p for p in model.parameters() if p in ignored]
    after = dict(model.named_parameters())
    record_successors(model, {old: after[name] for old, name in before.items() if name in after})
    return model


def sync_replicated_grads(model: nn.Module) -> None:
    """Average the gradients of the replicated parameters over ranks, once per optimizer step
    (after the last micro-batch, before clipping); FSDP2 reduces only the sharded ones."""
    params = [p for p in _REPLICATED.get(model, []) if p.grad is not None]
    if not params or dist.get_world_size() == 1:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat)  # a sum: gloo has no average
    flat /= dist.get_world_size()
    start = 0
    for p in params:
        p.grad.copy_(flat[start : start + p.grad.numel()].view_as(p.grad))
        start += p.grad.numel()


def full_trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable parameter in full on CPU, by the names `named_parameters` gives (a
    collective; only rank 0, which writes the checkpoint, gets the tensors: the other ranks
    never hold a whole copy)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
    state = get_model_state_dict(model, options=options)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    missing = [name for name in trainable if name not in state]
    if state and missing:  # names the checkpoint could not restore: fail now, not at resume
        raise RuntimeError(f"the sharded state dict lacks trainable parameters {missing[:3]}")
    return {name: state[name] for name in trainable if name in state}


def load_full_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy full tensors into the trainable shards of this rank; names must match exactly."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
    if missing or unexpected:
        raise ValueError(
            "trainable state does not match the sharded model: "
            f"{len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    with torch.no_grad():
        for name, param in params.items():
            value = state[name].to(device=param.device, dtype=param.dtype)
            if tuple(value.shape) != tuple(param.shape):
                raise ValueError(
                    f"trainable state: {name} has shape {tuple(value.shape)}, "
                    f"the model expects {tuple(param.shape)}"
                )
            if isinstance(param, DTensor):
                # every rank holds the full tensor: each keeps its shard, nothing is sent
                value = distribute_tensor(
                    value, param.device_mesh, param.placements, src_data_rank=None
                )
            param.copy_(value)


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole state dict in full on CPU, for the export (a collective; only rank 0, which
    writes the export, gets the tensors)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options())


def _options() -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer state keyed by parameter names, in full (a collective; only rank 0 gets
    the tensors, which is where the checkpoint is written)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_options())


def load_full_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Each rank takes its shard of a full optimizer state (`full_optimizer_state`)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(
        model, optimizer, optim_state_dict=state, options=StateDictOptions(full_state_dict=True)
    )


def _inner(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside accelerate's wrapper."""
    return getattr(optimizer, "optimizer", optimizer)


def optimizer_state(model: nn.Module, optimizer: Any) -> dict[str, Any]:
    """What a checkpoint stores of the optimizer: its own state dict, or the consolidated one
    of a sharded model."""
    if is_sharded(model):
        return full_optimizer_state(model, _inner(optimizer))
    return optimizer.state_dict()


def load_optimizer_state(model: nn.Module, optimizer: Any, state: dict[str, Any]) -> None:
    """The inverse of `optimizer_state`."""
    if is_sharded(model):
        load_full_optimizer_state(model, _inner(optimizer), state)
    else:
        optimizer.load_state_dict(state)
