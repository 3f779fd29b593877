"""ProCL: continual LoRA with program memory, and the sequential-LoRA baseline
(docs/methods/procl.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from retain.methods.procl.config import ProCLConfig
from retain.methods.spec import MethodSpec, PaperClaim

if TYPE_CHECKING:
    from retain.config_sections import CoreConfig
    from retain.methods.base import Plugin


def build(config: CoreConfig, method: str) -> Plugin | None:
    from retain.methods.procl.plugin import build_adapter_plugin

    return build_adapter_plugin(config, method)


def plain_lora(config: CoreConfig, method: str) -> bool:
    """Decision: `seq_lora` without `procl.adapter_mlp` has no plugin: it is the loop's plain
    LoRA fine-tuning through all tasks, the same run as `sequential` with `model.finetune:
    lora` (`seq_lora_paper` has the reference's MLP, so it always has a plugin)."""
    return method == "seq_lora" and not config.procl.adapter_mlp


METHODS = (
    MethodSpec(
        names=(
            "seq_lora",
            "procl",
            "procl_no_w_orig",
            "procl_no_consolidation",
            "procl_random_routing",
            "procl_uniform_routing",
            "seq_lora_paper",
            "procl_paper",
            "procl_paper_no_w_orig",
            "procl_paper_no_consolidation",
            "procl_paper_random_routing",
            "procl_paper_uniform_routing",
        ),
        family="adapter",
        build=build,
        sections={"procl": ProCLConfig},
        summary="`procl_<ablation>` are the paper's ablations; `seq_lora` is one LoRA through "
        "all tasks; `*_paper*` run them as the reference code does (gates 0, both factors, "
        "adapter MLP, consolidation per micro-batch, pooling over all positions)",
        needs_lora=True,
        plain_when=plain_lora,
        claims=(
            PaperClaim("procl", "olora", "ProCL"),
            PaperClaim("procl", "seq_lora", "ProCL"),
            PaperClaim("olora", "seq_lora", "ProCL", relation="≈"),
        ),
    ),
)
