"""The backbone's final hidden states (output of the final norm, input of `lm_head`) of a forward.

Methods that regularise representations (GeRe) need the last hidden state of the training
forward. `output_hidden_states=True` would keep every layer's activations alive; instead a
forward hook on the decoder stack (`LlamaModel`, `Qwen2Model`, ...) takes only its
`last_hidden_state`, and only while a caller asks for it.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


def unwrap_parallel(model: nn.Module) -> nn.Module:
    """The module inside DDP-style wrappers (`.module`), as plugins hold the prepared model."""
    while isinstance(model, nn.parallel.DistributedDataParallel) or (
        type(model).__name__ in ("DistributedDataParallel", "FullyShardedDataParallel")
        and hasattr(model, "module")
    ):
        model = model.module
    return model


def causal_lm(model: nn.Module) -> Any:
    """The transformers model inside DDP-style and PEFT wrappers."""
    inner: Any = unwrap_parallel(model)
    return inner.get_base_model() if hasattr(inner, "get_base_model") else inner


def projects_kept_positions(model: nn.Module) -> bool:
    """Whether the causal LM inside `model` takes a [rows, length] bool `logits_to_keep`: then
    only the positions a loss reads go through `lm_head`. transformers' decoders slice it with
    `slice_logits_to_keep`; releases without that helper take integers only."""
    from transformers import modeling_utils

    if not hasattr(modeling_utils, "slice_logits_to_keep"):
        return False
    try:
        return "logits_to_keep" in inspect.signature(causal_lm(model).forward).parameters
    except (TypeError, ValueError):
        return False


def decoder_module(model: nn.Module) -> nn.Module:
    """The decoder stack whose output is the final hidden state, for HF causal LMs with or
    without a PEFT wrapper; a clear error for models that do not expose one."""
    inner = causal_lm(model)
    getter = getattr(inner, "get_decoder", None)
    decoder = getter() if callable(getter) else getattr(inner, "model", None)
    if not isinstance(decoder, nn.Module) or decoder is inner:
        raise ValueError(
            f"cannot find the decoder stack of {type(inner).__name__} (no get_decoder() or "
            "`.model`): final hidden states are read from its last_hidden_state"
        )
    return decoder


class HiddenCapture:
    """Holds the last hidden state the hooked decoder produced (None before a forward)."""

    def __init__(self) -> None:
        self.value: torch.Tensor | None = None

    def hook(self, module: nn.Module, args: Any, output: Any) -> None:
        hidden = getattr(output, "last_hidden_state", None)
        if hidden is None and isinstance(output, tuple | list):
            hidden = output[0]
        if not isinstance(hidden, torch.Tensor):
            raise TypeError(f"{type(module).__name__} returned no last_hidden_state")
        self.value = hidden

    def take(self) -> torch.Tensor:
        if self.value is None:
            raise RuntimeError("no forward ran through the hooked decoder")
        value, self.value = self.value, None
        return value


@contextmanager
def capture_final_hidden(decoder: nn.Module) -> Iterator[HiddenCapture]:
    """Within the block, every forward of `decoder` leaves its last hidden state (with grad,
    when the forward has grad) in the yielded capture; the hook is removed on exit."""
    capture = HiddenCapture()
    handle = decoder.register_forward_hook(capture.hook)
    try:
        yield capture
    finally:
        handle.remove()
