"""`ProCLPlugin`: ProCL, its four ablations, and `seq_lora` with the reference's adapter MLP.

| method                   | routing (gates σ(s) kept)          | W_orig   | consolidation |
|--------------------------|------------------------------------|----------|---------------|
| `procl`                  | learned router                     | γ = σ(g) | every step    |
| `procl_no_w_orig`        | learned router                     | γ = 0    | every step    |
| `procl_no_consolidation` | learned router                     | γ = σ(g) | never         |
| `procl_random_routing`   | Dirichlet(1) draw per step, seeded | γ = σ(g) | every step    |
| `procl_uniform_routing`  | 1/N for every head and slot        | γ = σ(g) | every step    |
| `seq_lora`               | plain LoRA through all tasks (a plugin only for `adapter_mlp`)   |

`procl_paper`, `procl_paper_<ablation>` and `seq_lora_paper` are the same with the reference
code's settings (`config.PAPER`: gates at 0, both factors, the adapter MLP, consolidation per
micro-batch, pooling over every position) in place of the `procl:` section's.

Hook use: `wrap_model` wraps the LoRA factors and creates every parameter (router, keys, gates,
γ logit, MLP) once; `on_task_start` rebuilds the programs from task 2 on; `after_step`
consolidates M; `export_adapter` writes the standard PEFT adapter (M is the factor).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from retain.config_base import ConfigError
from retain.config_sections import CoreConfig
from retain.data.encoding import Batch
from retain.methods.base import Context, Plugin, StepOutputs
from retain.methods.procl.config import ProCLConfig, paper_settings
from retain.methods.procl.layer import (
    RoutingState,
    WrappedFactor,
    install_mask_hook,
    wrap_lora_factors,
)
from retain.methods.procl.program import Routing, consolidate

if TYPE_CHECKING:
    from retain.data.task import Task

RESET_SEED_TAG = 0x50524F43
"""Seed stream of the per-task re-initialisation (run seed, task, factor): a resumed run
rebuilds the very same router, keys and MLP without touching the global generators."""
MLP_FILE = "procl_adapter_mlp.safetensors"


@dataclass(frozen=True)
class Variant:
    """What a method name switches on (the paper's ablation table; ours, the code has none)."""

    programs: bool = True
    routing: Routing = "learned"
    w_orig: bool = True
    consolidation: bool = True
    paper: bool = False  # the reference code's settings (config.PAPER)


_OURS: dict[str, Variant] = {
    "seq_lora": Variant(programs=False),
    "procl": Variant(),
    "procl_no_w_orig": Variant(w_orig=False),
    "procl_no_consolidation": Variant(consolidation=False),
    "procl_random_routing": Variant(routing="random"),
    "procl_uniform_routing": Variant(routing="uniform"),
}
VARIANTS: dict[str, Variant] = {
    **_OURS,
    "seq_lora_paper": replace(_OURS["seq_lora"], paper=True),
    **{
        name.replace("procl", "procl_paper", 1): replace(v, paper=True)
        for name, v in _OURS.items()
        if name.startswith("procl")
    },
}
"""Every method name of the package: ours, and each in paper mode (`*_paper*`)."""


def settings(config: CoreConfig, method: str) -> ProCLConfig:
    """The `procl:` settings `method` runs with: the section, or in paper mode the section with
    the reference code's five settings (`config.PAPER`) in their place."""
    return paper_settings(config.procl) if VARIANTS[method].paper else config.procl


class ProCLPlugin(Plugin):
    """Program-memory LoRA over PEFT's LoRA factors (docs/methods/procl.md).

    Decision (docs/methods/procl.md): task 1 trains plain LoRA; from task 2 on, each task
    starts from the carried factors (W_orig = M = previous result) with a fresh router, keys,
    gates and γ.
    Decision: consolidation once per optimizer step from the step's last training forward (the
    reference: per micro-batch forward), applied right after the step, so nothing is pending
    when a task ends and its adapter is saved.
    Decision: under several processes routing averages over each rank's rows (as the reference
    would under DDP); T is averaged over ranks before consolidation, which keeps M identical
    on every rank and equals T of the global batch (α is linear in the attention mean).
    """

    wraps_model = True
    ddp_find_unused_parameters = True

    def __init__(self, config: CoreConfig, method: str) -> None:
        super().__init__(config)
        if method not in VARIANTS:
            raise ValueError(f"{method!r} is not a ProCL method; allowed: {', '.join(VARIANTS)}")
        self.name = method
        self.variant = VARIANTS[method]
        self.settings = settings(config, method)
        self.routing = RoutingState(
            seed=config.seed, all_positions=self.settings.pooling == "all"
        )
        self.factors: list[WrappedFactor] = []
        self.task_index = -1
        self.in_task = False

    # ---------------------------------------------------------------- modes
    def _set_mode(self, task: int) -> None:
        """Which parts run and which train in `task` (−1: freshly wrapped, before task 1: every
        parameter that will ever train is marked trainable, so DDP registers it)."""
        v = self.variant
        later = task != 0
        for f in self.factors:
            p = f.program
            p.active = v.programs and task >= 1
            p.mlp_active = p.mlp is not None and task >= 1
            p.routing = v.routing
            p.fixed_gamma = None if v.w_orig else 0.0
            p.record = v.consolidation
            if p.router is not None:
                p.router.requires_grad_(later and v.routing == "learned")
                p.keys.requires_grad_(later and v.routing == "learned")
                p.gates.requires_grad_(later)
                p.gamma_logit.requires_grad_(later and v.w_orig)
            if p.mlp is not None:
                p.mlp.requires_grad_(later)

    # ---------------------------------------------------------------- hooks
    def wrap_model(self, ctx: Context, model: nn.Module) -> nn.Module:
        if self.settings.consolidate_every == "micro_batch" and ctx.processes > 1:
            raise ConfigError(
                f"{self.name}: consolidation per micro-batch (procl.consolidate_every: "
                f"micro_batch{', set by paper mode' if self.variant.paper else ''}) runs in one "
                f"process only; this run has {ctx.processes}"
            )
        self.factors = wrap_lora_factors(model, self.settings, self.variant.programs, self.routing)
        install_mask_hook(model, self.routing, lambda: ctx.global_step)
        self._set_mode(-1)
        return model

    def on_task_start(self, ctx: Context, task: Task) -> None:
        """Rebuild the programs (from task 2 on); a mid-task resume keeps the restored ones."""
        t = ctx.task_index
        if not (self.in_task and self.task_index == t):
            if t >= 1:
                for i, f in enumerate(self.factors):
                    seq = np.random.SeedSequence([self.config.seed, RESET_SEED_TAG, t, i])
                    seed = int(seq.generate_state(1, np.uint64)[0] >> 1)
                    f.program.reset(f.memory, torch.Generator().manual_seed(seed))
                if self.variant.programs:
                    ctx.log_event({"type": "procl_task_start", "task": t, **self.summary()})
            self.task_index, self.in_task = t, True
        self._set_mode(t)

    def after_step(self, ctx: Context, batch: Batch, outputs: StepOutputs) -> None:
        """Consolidate once per optimizer step (the first call after it; later micro-batch
        calls find nothing pending). With `consolidate_every: micro_batch` the earlier
        micro-batches' T were applied by the forwards that followed them (layer.py), and this
        applies the last one, as the reference's next forward would."""
        self._consolidate(ctx)

    def on_task_end(self, ctx: Context, task: Task) -> None:
        self._consolidate(ctx)
        if self.variant.programs and ctx.task_index >= 1:
            ctx.log_event({"type": "procl_task_end", "task": ctx.task_index, **self.summary()})
        self.in_task = False

    def _consolidate(self, ctx: Context) -> None:
        pending = [f for f in self.factors if f.program.pending is not None]
        if not pending:
            return
        targets = [f.program.pending for f in pending]
        targets = ctx.reduce(targets, "mean")  # type: ignore[arg-type]
        c = self.settings.consolidation
        for f, target in zip(pending, targets, strict=True):
            consolidate(f.memory, target, c)
            f.program.pending = None

    def summary(self) -> dict[str, float]:
        """Mean γ and mean slot gate σ(s) over the wrapped factors (logged per task)."""
        gammas, gates = [], []
        with torch.no_grad():
            for f in self.factors:
                p = f.program
                if p.router is None:
                    continue
                gamma = p.gamma()
                gammas.append(float(gamma) if isinstance(gamma, float) else gamma.item())
                gates.append(float(torch.sigmoid(p.gates).mean()))
        if not gammas:
            return {}
        return {"gamma_mean": float(np.mean(gammas)), "gate_mean": float(np.mean(gates))}

    def replicated_parameters(self) -> list[nn.Parameter]:
        """What consolidation and task resets rewrite in place: FSDP2 leaves these whole on
        every rank (train/fsdp.py)."""
        return [p for f in self.factors for m in (f.factor, f.program) for p in m.parameters()]

    # ---------------------------------------------------------------- export
    def export_adapter(
        self,
        ctx: Context,
        model: nn.Module,
        path: Path,
        state_dict: dict[str, Any] | None = None,
    ) -> None:
        """The standard PEFT adapter (its factors are M); with `procl.adapter_mlp` also the
        MLPs beside it, since the adapter alone does not reproduce such a model."""
        from retain.models.adapters import save_adapter

        self._consolidate(ctx)
        save_adapter(model, path, state_dict=state_dict)
        mlps = {
            f"{f.key}.mlp.{name}": tensor.detach().cpu().contiguous().clone()
            for f in self.factors
            if f.program.mlp is not None and f.program.mlp_active
            for name, tensor in f.program.mlp.state_dict().items()
        }
        if mlps:
            save_file(mlps, str(Path(path) / MLP_FILE), metadata={"note": MLP_NOTE})

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Every program tensor (W_orig is frozen, so only this holds it), copied."""
        return {
            "method": self.name,
            "task_index": self.task_index,
            "in_task": self.in_task,
            "factors": {
                f.key: {k: v.detach().clone() for k, v in f.program.state_dict().items()}
                for f in self.factors
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["method"] != self.name:
            raise ValueError(f"checkpoint of {state['method']!r} cannot resume {self.name!r}")
        saved = state["factors"]
        keys = [f.key for f in self.factors]
        if sorted(saved) != sorted(keys):
            raise ValueError(
                f"checkpoint of {self.name} wraps other LoRA factors ({len(saved)} saved, "
                f"{len(keys)} in this model)"
            )
        for f in self.factors:
            f.program.load_state_dict(saved[f.key])
            f.program.pending = None
        self.task_index = int(state["task_index"])
        self.in_task = bool(state["in_task"])
        self._set_mode(self.task_index)


MLP_NOTE = (
    "ProCL adapter_mlp: y = MLP(x W^T) after every wrapped LoRA factor (retain "
    "docs/methods/procl.md); the PEFT adapter beside this file alone does not reproduce the "
    "trained model"
)


def build_adapter_plugin(config: CoreConfig, method: str) -> Plugin | None:
    """The plugin of `seq_lora` or a ProCL method; None where `plain_lora` says the method is
    plain LoRA fine-tuning."""
    from retain.methods.procl import plain_lora

    if method not in VARIANTS:
        raise ValueError(f"{method!r} is not a ProCL method; allowed: {', '.join(VARIANTS)}")
    return None if plain_lora(config, method) else ProCLPlugin(config, method)


__all__ = ["VARIANTS", "ProCLPlugin", "build_adapter_plugin", "settings"]
