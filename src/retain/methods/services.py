"""Model services the plugin context offers every method, so that none writes its own:
a forward with per-row losses on given rows (`Context.rows`, `Context.forward`), a frozen copy
of the model as a teacher (`FrozenCopy`, `Context.frozen_copy`), and work split across
processes and added up (`process_share`, `all_reduce`, `Context.shard`, `Context.reduce`).
docs/adding-a-method.md shows them in use.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal, TypeVar

import torch
from torch import nn

T = TypeVar("T")


class FrozenCopy:
    """The model as it was at one moment, frozen: a distillation teacher.

    Decision: parameters that cannot change for the rest of the run (the backbone's weights
    under LoRA: `shared`) are shared with the training model, not copied, so a teacher under
    LoRA costs the adapter's memory only; every other parameter (the adapters, or every weight
    under full fine-tuning) and every buffer is copied. `state_dict` holds exactly the copied
    parameters, which is what a checkpoint needs to rebuild the teacher. Replicated weights
    only (one process or DDP): FSDP/ZeRO-3 shards cannot be deep-copied this way.
    """

    def __init__(self, model: nn.Module, shared: frozenset[int]) -> None:
        memo: dict[int, object] = {id(p): p for p in model.parameters() if id(p) in shared}
        self.model = copy.deepcopy(model, memo)
        self.model.eval()
        self.model.requires_grad_(False)
        self.owned = {
            name: p for name, p in self.model.named_parameters() if id(p) not in shared
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The copied parameters by name (what differs from the training model later)."""
        return {name: p.detach().clone() for name, p in self.owned.items()}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.owned) - set(tensors))
        if missing:
            raise ValueError(f"teacher state lacks {len(missing)} parameters, e.g. {missing[0]}")
        with torch.no_grad():
            for name, p in self.owned.items():
                p.copy_(tensors[name].to(p.device, p.dtype))


@contextmanager
def whole_weights(model: nn.Module, backward: bool = False) -> Iterator[None]:
    """The model's weights whole on every process for the duration, so that
    `named_parameters` yields plain full tensors and forwards need no collective (a sharded
    model, `train.sharding=fsdp2`: `train.fsdp.gathered`); nothing to do otherwise. With
    `backward`, gradients may be taken inside with `torch.autograd.grad` on those tensors,
    and each process may run its own number of passes."""
    from retain.train.fsdp import gathered

    with gathered(model, backward=backward):
        yield


def all_reduce(
    tensors: list[torch.Tensor], op: Literal["sum", "mean"] = "mean"
) -> list[torch.Tensor]:
    """The element-wise sum or mean over processes (one all-reduce of the flattened tensors),
    or the tensors themselves in a single process."""
    import torch.distributed as dist

    if not tensors or not (dist.is_available() and dist.is_initialized()):
        return tensors
    world = dist.get_world_size()
    if world == 1:
        return tensors
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    if op == "mean":
        flat /= world
    out, start = [], 0
    for t in tensors:
        out.append(flat[start : start + t.numel()].view_as(t))
        start += t.numel()
    return out


def processes() -> int:
    """How many processes train the run (1 without torch.distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return int(dist.get_world_size())


def process_share(items: Sequence[T]) -> list[T]:
    """This process's share of `items` (every `world`-th from its rank): work split across
    processes whose results `all_reduce` then adds up."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return list(items)
    return list(items[dist.get_rank() :: dist.get_world_size()])


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Dropout off for a pass that computes targets; the previous mode is restored."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
