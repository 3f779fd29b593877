"""Model surgery: ProCL wrappers in place of the LoRA factors of PEFT's LoRA layers.

Each wrapped factor (`lora_A` / `lora_B` of every LoRA layer) becomes a `ProgramFactor`: an
`nn.Linear` that keeps the very same weight parameter (the program memory `M`), so PEFT still
saves, loads and merges it as an ordinary LoRA factor. The factor's router, keys, gates, γ logit,
`W_orig` and MLP live in a `FactorProgram` registered on the LoRA layer under `procl.A` /
`procl.B`: outside PEFT's `lora_` names, so a saved adapter holds only the factors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from retain.methods.procl.config import ProCLConfig
from retain.methods.procl.program import FactorProgram, consolidate, pooling_weights

RANDOM_ROUTING_TAG = 0x524F5554
"""Seed stream of the random-routing ablation (with the run seed, the step and the factor)."""


class RoutingState:
    """What the wrappers need from the forward being run: the batch's attention mask (handed
    over by a forward pre-hook on the model) and the optimizer step (random routing)."""

    def __init__(self, seed: int = 0, all_positions: bool = False) -> None:
        self.seed = seed
        self.all_positions = all_positions  # `procl.pooling: all`: the mask is ignored
        self.step = 0
        self.mask: torch.Tensor | None = None
        self._weights: torch.Tensor | None = None

    def set_mask(self, mask: torch.Tensor | None) -> None:
        self.mask, self._weights = mask, None

    def pooling(self, dtype: torch.dtype) -> torch.Tensor | None:
        """The mask's pooling weights, computed once per forward for all factors."""
        if self.mask is None or self.all_positions:
            return None
        if self._weights is None or self._weights.dtype != dtype:
            self._weights = pooling_weights(self.mask, dtype)
        return self._weights

    def generator(self, index: int) -> torch.Generator:
        """The random-routing draw of factor `index` at this step: the same for every
        micro-batch of a step and after a resume."""
        state = np.random.SeedSequence([self.seed, RANDOM_ROUTING_TAG, self.step, index])
        return torch.Generator().manual_seed(int(state.generate_state(1, np.uint64)[0] >> 1))


class ProgramFactor(nn.Linear):
    """A LoRA factor that executes `W_exec` in training forwards from task 2 on and is the
    plain factor `M` otherwise (evaluation, task 1): no routing cost at inference."""

    def __init__(
        self, base: nn.Linear, program: FactorProgram, routing: RoutingState, index: int
    ) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight  # the same parameter object: M
        self.register_parameter("bias", None)
        # plain attributes, not submodules: the program is registered outside the `lora_` names
        self.__dict__["program"] = program
        self.__dict__["routing"] = routing
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        program: FactorProgram = self.__dict__["program"]
        if self.training and program.active:
            if program.pending is not None and program.each_forward and torch.is_grad_enabled():
                # `consolidate_every: micro_batch`: the previous micro-batch's T, before this
                # forward reads M (the reference's order); the last one waits for after_step
                consolidate(self.weight, program.pending, program.consolidation)
                program.pending = None
            routing: RoutingState = self.__dict__["routing"]
            generator = routing.generator(self.index) if program.routing == "random" else None
            weight = program.executing(self.weight, x, routing.pooling(x.dtype), generator)
            if program.record and torch.is_grad_enabled():
                program.pending = weight.detach()
            y = F.linear(x, weight)
        else:
            y = F.linear(x, self.weight)
        if program.mlp_active:
            assert program.mlp is not None
            y = program.mlp(y)
        return y


@dataclass
class WrappedFactor:
    """One wrapped factor: where it is (for messages and state keys) and its parts."""

    key: str
    factor: ProgramFactor
    program: FactorProgram

    @property
    def memory(self) -> torch.Tensor:
        return self.factor.weight


def lora_layers(model: nn.Module, adapter: str) -> list[tuple[str, nn.Module]]:
    """PEFT's LoRA layers that hold `adapter`, by module name."""
    from peft.tuners.lora import LoraLayer

    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, LoraLayer) and adapter in module.lora_A
    ]


def wrap_lora_factors(
    model: nn.Module, cfg: ProCLConfig, programs: bool, routing: RoutingState
) -> list[WrappedFactor]:
    """Replace the configured factors of every LoRA layer by `ProgramFactor`s.

    `programs=False` wraps for the adapter MLP only (`seq_lora` with `procl.adapter_mlp`).
    """
    adapter = getattr(model, "active_adapter", "default")
    if not isinstance(adapter, str):
        raise ValueError(f"ProCL wraps one LoRA adapter; the model has {adapter} active")
    layers = lora_layers(model, adapter)
    if not layers:
        raise ValueError(
            "ProCL found no LoRA layer to wrap: it needs model.finetune: lora and "
            "model.lora.target_modules naming linear layers"
        )
    wrapped: list[WrappedFactor] = []
    for name, layer in layers:
        holder = nn.ModuleDict()
        for factor in cfg.factors:
            container = getattr(layer, factor)
            base = container[adapter]
            where = f"{name}.{factor}"
            if type(base) is not nn.Linear or base.bias is not None:
                raise ValueError(
                    f"procl.factors: {where} is a {type(base).__name__}"
                    f"{' with bias' if base.bias is not None else ''}; ProCL wraps the "
                    "bias-free linear factors of LoRA on linear layers only"
                )
            rows, d = base.weight.shape
            if programs and rows % cfg.slots:
                raise ValueError(
                    f"procl.slots={cfg.slots} must divide the {rows} rows of {where} "
                    f"({'the LoRA rank model.lora.r' if factor == 'lora_A' else 'its outputs'})"
                )
            program = FactorProgram(
                rows,
                d,
                cfg.slots,
                cfg.key_dim,
                cfg.temperature,
                programs=programs,
                mlp_hidden=cfg.mlp_hidden if cfg.adapter_mlp else None,
                dtype=base.weight.dtype,
                gate_init=cfg.gate_init,
            ).to(base.weight.device)
            program.consolidation = cfg.consolidation
            program.each_forward = cfg.consolidate_every == "micro_batch"
            holder[factor.removeprefix("lora_")] = program
            wrapper = ProgramFactor(base, program, routing, len(wrapped))
            wrapper.train(base.training)
            container[adapter] = wrapper
            wrapped.append(WrappedFactor(where, wrapper, program))
        layer.add_module("procl", holder)
    return wrapped


def install_mask_hook(
    model: nn.Module, routing: RoutingState, step: Callable[[], int]
) -> torch.utils.hooks.RemovableHandle:
    """Hand every forward's attention mask (and the optimizer step) to the wrappers: a factor
    sees only its input, but routing pools over real tokens. The hook sits on the transformers
    model inside PEFT's wrapper, so a forward that bypasses the PeftModel still sets it."""

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        mask = kwargs.get("attention_mask")
        if mask is None and len(args) > 1 and isinstance(args[1], torch.Tensor):
            mask = args[1]
        routing.set_mask(mask)
        routing.step = step()

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.register_forward_pre_hook(hook, with_kwargs=True)
