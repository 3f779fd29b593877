"""The `procl:` section: program memory, router and the paper's ablations (procl.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from retain.config_base import Section


class ProCLConfig(Section):
    """ProCL settings; spec defaults (procl.md)."""

    slots: int = Field(4, gt=0, description="N: slots the program memory M is split into")
    key_dim: int = Field(16, gt=0, description="d_k of the router's query heads and keys")
    temperature: float = Field(1.0, gt=0, description="τ of the routing softmax")
    consolidation: float = Field(
        0.1,
        gt=0,
        le=1,
        description="after every optimizer step M ← c·M_updated + (1 − c)·W_exec",
    )
    factors: list[Literal["lora_A", "lora_B"]] = Field(
        default_factory=lambda: ["lora_A", "lora_B"],
        description="which LoRA factors of the target modules are wrapped",
    )
    adapter_mlp: bool = Field(
        False,
        description="the reference code's ReLU MLP after every wrapped factor (from task 2, "
        "re-initialised each task; also for seq_lora); makes adapters unmergeable",
    )
    mlp_hidden: int = Field(128, gt=0, description="hidden width of adapter_mlp")
