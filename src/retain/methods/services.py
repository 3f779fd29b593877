"""Model services the plugin context offers every method, so that none writes its own:
a forward with per-row losses on given rows (`Context.rows`, `Context.forward`), a frozen copy
of the model as a teacher (`FrozenCopy`, `Context.frozen_copy`), work split across
processes and added up (`process_share`, `all_reduce`, `Context.shard`, `Context.reduce`),
and, for a sharded model (`train.sharding=fsdp2`), its whole weights for a pass
(`whole_weights`) and the parameters that live for the run (`persistent_parameters`).
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
    """The model as it was at one moment, frozen: a distillation teacher. Forward through the
    model that `active()` yields.

    Decision: parameters that cannot change for the rest of the run (the backbone's weights
    under LoRA: `shared`) are shared with the training model, not copied, so a teacher under
    LoRA costs the adapter's memory only; every other parameter (the adapters, or every weight
    under full fine-tuning) and every buffer is copied. `state_dict` holds exactly the copied
    parameters, whole, which is what a checkpoint needs to rebuild the teacher.

    Sharded (`train.sharding=fsdp2`), a module cannot be deep-copied: the teacher keeps this
    process's piece of each copied parameter, and `active()` swaps those pieces into the
    training model itself for a forward (`models.sharding.weights_swapped`), every process at once
    since sharded forwards are collectives. Its memory is then the copied parameters divided
    by the processes; `state_dict` gathers them whole (a collective).
    """

    def __init__(self, model: nn.Module, shared: frozenset[int]) -> None:
        from retain.models.sharding import is_sharded

        self.sharded = is_sharded(model)
        if self.sharded:
            self.model = model
            self.owned = {
                name: p for name, p in persistent_parameters(model).items() if id(p) not in shared
            }
            self.pieces = {name: _piece(p).detach().clone() for name, p in self.owned.items()}
            return
        memo: dict[int, object] = {id(p): p for p in model.parameters() if id(p) in shared}
        self.model = copy.deepcopy(model, memo)
        self.model.eval()
        self.model.requires_grad_(False)
        self.owned = {
            name: p for name, p in self.model.named_parameters() if id(p) not in shared
        }

    @contextmanager
    def active(self) -> Iterator[nn.Module]:
        """The teacher model to forward through, in eval mode (a sharded one only inside)."""
        if not self.sharded:
            yield self.model
            return
        from retain.models.sharding import weights_swapped

        with weights_swapped(self.model, self.pieces), eval_mode(self.model):
            yield self.model

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The copied parameters by name (what differs from the training model later)."""
        if self.sharded:
            from retain.models.sharding import full_from_parts

            return {
                name: full_from_parts(self.pieces[name], p).cpu()
                for name, p in self.owned.items()
            }
        return {name: p.detach().clone() for name, p in self.owned.items()}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        missing = sorted(set(self.owned) - set(tensors))
        if missing:
            raise ValueError(f"teacher state lacks {len(missing)} parameters, e.g. {missing[0]}")
        if self.sharded:
            from retain.models.sharding import local_part

            for name, p in self.owned.items():
                value = tensors[name].to(p.device, p.dtype)
                self.pieces[name] = local_part(value, p).clone()
            return
        with torch.no_grad():
            for name, p in self.owned.items():
                p.copy_(tensors[name].to(p.device, p.dtype))


def _piece(param: torch.Tensor) -> torch.Tensor:
    """This process's piece of a sharded parameter, the parameter itself when whole."""
    from retain.models.sharding import is_shard

    return param.to_local() if is_shard(param) else param  # type: ignore[attr-defined]


def persistent_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The model's parameters by name, the objects that live for the run: a sharded model's
    DTensors (`models.sharding.resharded_parameters`), never the whole tensors it gathers for a
    forward, which it frees again."""
    from retain.models.sharding import resharded_parameters

    return resharded_parameters(model)


@contextmanager
def whole_weights(model: nn.Module, backward: bool = False) -> Iterator[None]:
    """The model's weights whole on every process for the duration, so that
    `named_parameters` yields plain full tensors and forwards need no collective (a sharded
    model, `train.sharding=fsdp2`: `models.sharding.gathered`); nothing to do otherwise. With
    `backward`, gradients may be taken inside with `torch.autograd.grad` on those tensors,
    and each process may run its own number of passes."""
    from retain.models.sharding import gathered

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
