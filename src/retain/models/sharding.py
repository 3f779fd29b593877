"""What a model sharded by FSDP2 (`train/fsdp.py` applies it) offers the code that runs it.

Methods read and write their state on sharded models (EWC's Fisher, LwF's teacher) and the
loop gathers whole weights for evaluation; all of it sits here, below the methods and the loop,
so neither reaches up into training to handle a sharded parameter. A model never sharded passes
through every function unchanged.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


def is_sharded(model: nn.Module) -> bool:
    """Whether `shard_model` was applied to `model`."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


_SUCCESSORS: weakref.WeakKeyDictionary[nn.Module, dict[int, nn.Parameter]] = (
    weakref.WeakKeyDictionary()
)
"""Per sharded model: the id of each parameter before sharding -> the one that replaced it."""


def record_successors(model: nn.Module, mapping: dict[int, nn.Parameter]) -> None:
    """Remember, for the sharded `model`, which parameter replaced each one (by old id)."""
    _SUCCESSORS[model] = mapping


def successors(model: nn.Module, params: list[nn.Parameter]) -> list[nn.Parameter]:
    """The parameters of the sharded `model` that replaced `params` (sharding swaps every
    parameter for a DTensor one, by name); `params` themselves for a model never sharded.
    The caller must still hold `params`, so that their ids are not reused."""
    found = _SUCCESSORS.get(model)
    if found is None:
        return params
    return [found.get(id(p), p) for p in params]


def _units(model: nn.Module) -> list[Any]:
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


_GATHERED: weakref.WeakSet[nn.Module] = weakref.WeakSet()


@contextmanager
def gathered(model: nn.Module, backward: bool = False) -> Iterator[None]:
    """Whole weights on every rank for the duration (a collective on entry): forward passes
    inside need no communication, and `named_parameters` yields full plain tensors. Writes to
    them are lost on exit; load weights with `load_full_trainable_state` instead.

    `backward`: gradients may be taken inside (`torch.autograd.grad` on the whole parameters,
    as EWC's Fisher pass does): the units then stay whole after a backward too and reduce no
    gradient, so ranks may run different numbers of passes without a collective."""
    units = _units(model)
    if not units or model in _GATHERED:  # nested: the outermost one reshards
        yield
        return
    for unit in units:
        unit.unshard()
        unit.set_reshard_after_forward(False, recurse=False)
        if backward:
            unit.set_reshard_after_backward(False, recurse=False)
            unit.set_requires_gradient_sync(False, recurse=False)
    _GATHERED.add(model)
    try:
        yield
    finally:
        _GATHERED.discard(model)
        for unit in units:
            unit.reshard()
            if unit is not model:  # the root never reshards after forward (FSDP2's default)
                unit.set_reshard_after_forward(True, recurse=False)
            if backward:
                unit.set_reshard_after_backward(True, recurse=False)
                unit.set_requires_gradient_sync(True, recurse=False)


def is_shard(tensor: torch.Tensor) -> bool:
    """Whether `tensor` is a sharded parameter (a DTensor) rather than a whole one."""
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def local_part(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """This rank's piece of `full`, cut as the sharded parameter `like` is cut (no
    communication: every rank holds `full`); `full` itself for a whole parameter."""
    from torch.distributed.tensor import distribute_tensor

    if not is_shard(like):
        return full
    value = full.to(device=like.device)
    spread = distribute_tensor(value, like.device_mesh, like.placements, src_data_rank=None)
    return spread.to_local()


def full_from_parts(part: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The whole tensor from every rank's `part` cut as `like` is (a collective: every rank
    must call it, in the same order); `part` itself for a whole parameter."""
    from torch.distributed.tensor import DTensor

    if not is_shard(like):
        return part
    spread = DTensor.from_local(
        part, like.device_mesh, like.placements, shape=like.shape, stride=like.stride()
    )
    return spread.full_tensor()


def resharded_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters by name as they persist: a sharded model's units are resharded first
    (the root stays whole after a training forward, and its whole tensors' memory is freed
    when it reshards), so a sharded model yields its DTensors; any other model its own."""
    if model not in _GATHERED:
        for unit in _units(model):
            unit.reshard()
    return dict(model.named_parameters())


@contextmanager
def weights_swapped(model: nn.Module, parts: dict[str, torch.Tensor]) -> Iterator[None]:
    """The sharded `model` holding `parts` (this rank's pieces, by parameter name) in place of
    its own for the duration: a forward inside runs those weights (a teacher's) through the very
    sharded units. Every unit is resharded on entry and exit, so no whole weight gathered
    before (the root's, kept after the training forward) is used inside, and the backward of a
    training forward taken before re-gathers its own weights, restored exactly."""
    from torch.distributed.tensor import DTensor

    if model in _GATHERED:
        raise RuntimeError("weights_swapped inside gathered: the whole weights would be used")
    units = _units(model)
    params = resharded_parameters(model)
    own: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, value in parts.items():
            param = params[name]
            local = param.to_local() if isinstance(param, DTensor) else param
            own[name] = local.clone()
            local.copy_(value)
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
        with torch.no_grad():
            for name, value in own.items():
                param = params[name]
                (param.to_local() if isinstance(param, DTensor) else param).copy_(value)
