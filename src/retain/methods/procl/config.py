"""The `procl:` section: program memory, router and the paper's ablations
(docs/methods/procl.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from retain.config_base import Section


class ProCLConfig(Section):
    """ProCL settings; defaults from docs/methods/procl.md except `factors`.

    Decision: only `lora_A` is wrapped by default (the reference wraps only `lora_A` on
    Flan-T5, and `lora_B` too on decoders). With both factors wrapped, the consolidation
    `M ← 0.1·M + 0.9·W_exec(M)` is a contraction towards `γ(I − α)⁻¹·W_orig`: each step's update
    of M decays by a factor ≤ 0.55 at the next step instead of accumulating, so the adapter
    cannot move far from the previous task's. On the built-in stream (SmolLM2-135M, 30 steps a
    task, lr 1e-3) the training loss stayed flat from task 2 on (0.95 → 0.92) and the new tasks
    were not learned (arithmetic 17 %, sequential LoRA 83 %); with `lora_B` left a plain LoRA
    factor the tasks were learned as by sequential LoRA (83 %, 96 %). `factors: [lora_A,
    lora_B]` restores the reference's decoder setting.

    Decision: the slot gates start at `s = −3` (σ ≈ 0.047), not at 0. At a task start
    `W_exec = γ·W_orig + Σ_n α_{h,n} P_n` with `M = W_orig` is not the carried factor: the routed
    slots add about σ(s) times their mean to every row block, and consolidation pulls M to that
    point, where the slots' common component is `γ/(1 − σ(s))` times the carried one — doubled
    per task at s = 0, so the previous tasks' adapter is distorted more at each task start. On
    the built-in stream (5 tasks, 30 steps, lr 1e-3) the first training loss of task 5 was 14.5
    at s = 0 against 1.67 for sequential LoRA, and `ap` fell to 10.0 (sequential 45.0); at
    s = −3 ProCL's `ap` was 47.5 and the recipe `mssr+gere+procl` 60.0 (61.7 at s = −6, 20.8 at
    s = 0; 48-token general rows). `gate_init: 0` restores the paper's initialisation.

    The `*_paper*` method names set `gate_init`, `factors`, `adapter_mlp`, `consolidate_every`
    and `pooling` to the reference's values (`PAPER`), whatever this section says.
    """

    slots: int = Field(4, gt=0, description="N: slots the program memory M is split into")
    key_dim: int = Field(16, gt=0, description="d_k of the router's query heads and keys")
    temperature: float = Field(1.0, gt=0, description="τ of the routing softmax")
    consolidation: float = Field(
        0.1,
        gt=0,
        le=1,
        description="after every optimizer step M ← c·M_updated + (1 − c)·W_exec",
    )
    gate_init: float = Field(
        -3.0,
        description="slot gate logit s at the start of every task (paper: 0, σ(s) = ½; "
        "see the class docstring for why the default is −3, σ(s) ≈ 0.047)",
    )
    factors: list[Literal["lora_A", "lora_B"]] = Field(
        default_factory=lambda: ["lora_A"],
        description="which LoRA factors of the target modules are wrapped (the reference "
        "wraps both on decoders; see the class docstring for why the default is lora_A)",
    )
    adapter_mlp: bool = Field(
        False,
        description="the reference code's ReLU MLP after every wrapped factor (from task 2, "
        "re-initialised each task; also for seq_lora); makes adapters unmergeable",
    )
    mlp_hidden: int = Field(128, gt=0, description="hidden width of adapter_mlp")
    consolidate_every: Literal["step", "micro_batch"] = Field(
        "step",
        description="when M is consolidated: after every optimizer step (from its last "
        "micro-batch), or after every training micro-batch as the reference code does "
        "(one process only)",
    )
    pooling: Literal["real_tokens", "all"] = Field(
        "real_tokens",
        description="what the router's mean pools over: real tokens (attention mask), or "
        "every position, padding included, as the reference code does",
    )


PAPER = {
    "gate_init": 0.0,
    "factors": ["lora_A", "lora_B"],
    "adapter_mlp": True,
    "consolidate_every": "micro_batch",
    "pooling": "all",
}
"""What `procl_paper` (and `procl_paper_<ablation>`, `seq_lora_paper`) set, whatever the
`procl:` section says: the reference code's behaviour on decoders
(docs/methods/procl_paper.md). The other keys (slots, key_dim, temperature, consolidation,
mlp_hidden) already default to the reference's values and are read from the section."""


def paper_settings(cfg: ProCLConfig) -> ProCLConfig:
    """`cfg` with the reference code's five settings (`PAPER`) in place of ours."""
    return cfg.model_copy(update={**PAPER, "factors": list(PAPER["factors"])})
