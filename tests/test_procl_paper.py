"""`procl_paper`: ProCL as its reference code runs, against a re-implementation of that code's
computation on identical tensors (docs/methods/procl_paper.md).

The reference is thaihungle/ProCL, `run_qa.py` at commit 536e502b (read, not copied; line
numbers counted from the stored text, about ±2): class `ProCLLinear` (about lines 247-335;
its `forward` from about 303: a pending consolidation target is blended into the weight
as `W ← (1 − λ)·W + λ·T` with λ = 0.9 at the start of every forward, training or not; in
training the router reads `x.mean(dim=1)` over every position, padding included; the slot gates
`program_scale` start at zeros; `W_exec = σ(γ)·W_orig + Σ α P`; the detached `W_exec` becomes
the next pending target every forward (`update_period` 1); the output goes through the
`AdapterMLP`, about 174-184), `replace_lora_modules` (from about 338; on a decoder both
`lora_A.default` and `lora_B.default` are replaced) and the argparse defaults in `main`
(N 4, d_key 16, λ 0.9, γ −1: learned); `run_sequence.sh` trains and evaluates each task in one
process, so evaluation runs with the MLP.
"""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from retain.config import ConfigError, load_config
from retain.methods.base import Context
from retain.methods.procl.config import PAPER
from retain.methods.procl.plugin import VARIANTS, ProCLPlugin, build_adapter_plugin, settings
from retain.models.adapters import prepare_for_finetuning
from retain.models.tiny import tiny_model_and_tokenizer
from retain.train.loop import run
from tests.killing import step_records, whole_beside_crashed_and_resumed
from tests.test_engine import TINY, tiny_config

LAMBDA = 0.9  # the reference's `--lambda_consolidation` default


class ReferenceFactor(nn.Module):
    """The reference's wrapped LoRA factor, re-implemented from its behaviour (see the module
    docstring), with its parameters taken from one of retain's programs."""

    def __init__(self, memory: torch.Tensor, program: nn.Module) -> None:
        super().__init__()
        self.weight = nn.Parameter(memory.detach().clone())
        self.register_buffer("w_orig", program.w_orig.detach().clone())
        self.encoder = copy.deepcopy(program.router)
        self.keys = nn.Parameter(program.keys.detach().clone())
        self.scale = nn.Parameter(program.gates.detach().clone())
        self.gamma = nn.Parameter(program.gamma_logit.detach().clone().reshape(()))
        self.mlp = copy.deepcopy(program.mlp)
        self.target: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.target is not None:  # the previous forward's W_exec, whatever this one is
            with torch.no_grad():
                self.weight.mul_(1.0 - LAMBDA).add_(LAMBDA * self.target)
            self.target = None
        if not self.training:
            return self.mlp(F.linear(x, self.weight))
        b = x.shape[0]
        slots = self.scale.shape[0]
        rows, d = self.weight.shape
        query = self.encoder.out(torch.tanh(self.encoder.inp(x.mean(dim=1)))).view(b, slots, -1)
        attention = torch.softmax(torch.einsum("bhk,hnk->bhn", query, self.keys), dim=-1)
        alpha = attention.mean(dim=0) * torch.sigmoid(self.scale)[None, :]
        programs = self.weight.view(slots, rows // slots, d)
        w_exec = torch.sigmoid(self.gamma) * self.w_orig + torch.einsum(
            "hn,nrd->hrd", alpha, programs
        ).reshape(rows, d)
        self.target = w_exec.detach()
        return self.mlp(F.linear(x, w_exec))


def _setup(method: str, *extra: str) -> tuple[nn.Module, ProCLPlugin, Context]:
    cfg = load_config(None, ["model.name_or_path=tiny-random", "model.lora.dropout=0.0",
                             f"methods=[{method}]", *extra])
    model = prepare_for_finetuning(tiny_model_and_tokenizer()[0], cfg.model)
    plugin = build_adapter_plugin(cfg, method)
    assert isinstance(plugin, ProCLPlugin)
    ctx = Context(config=cfg, stream=[None] * 3, store=None, task_samples=[],  # type: ignore[arg-type]
                  device=torch.device("cpu"))
    return plugin.wrap_model(ctx, model), plugin, ctx


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 256, (3, 8), generator=g)
    mask = torch.ones(3, 8, dtype=torch.long)
    mask[1, 5:] = 0  # padding: the reference pools over it, retain's default does not
    mask[2, 3:] = 0
    return ids, mask


def _train(model: nn.Module, steps: int, micro: int, after_step=None) -> list[float]:
    """SGD steps of `micro` micro-batches each (loss / micro, as the loop and HF Trainer)."""
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    losses = []
    for s in range(steps):
        for m in range(micro):
            ids, mask = _batch(10 * s + m)
            loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss / micro
            loss.backward()
            losses.append(float(loss.detach()))
        opt.step()
        opt.zero_grad()
        if after_step is not None:
            after_step()
    return losses


def _at_task_2(method: str, *extra: str) -> tuple[nn.Module, ProCLPlugin, Context]:
    """Task 1 trained (plain LoRA), task 2 started: fresh programs over the carried factors."""
    model, plugin, ctx = _setup(method, *extra)
    ctx.task_index = 0
    plugin.on_task_start(ctx, None)  # type: ignore[arg-type]
    _train(model, 2, 1, lambda: plugin.after_step(ctx, None, None))  # type: ignore[arg-type]
    ctx.task_index = 1
    plugin.on_task_start(ctx, None)  # type: ignore[arg-type]
    return model, plugin, ctx


def _reference_of(model: nn.Module, plugin: ProCLPlugin) -> nn.Module:
    """The same backbone and LoRA factors, each wrapped factor replaced by `ReferenceFactor`."""
    cfg = load_config(None, ["model.name_or_path=tiny-random", "model.lora.dropout=0.0"])
    ref = prepare_for_finetuning(tiny_model_and_tokenizer()[0], cfg.model)
    source = dict(model.named_parameters())
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if "lora_" in name:
                p.copy_(source[name])
    by_key = {f.key: f for f in plugin.factors}
    for name, module in ref.named_modules():
        for factor in ("lora_A", "lora_B"):
            key = f"{name}.{factor}"
            if key in by_key:
                f = by_key[key]
                getattr(module, factor)["default"] = ReferenceFactor(f.memory, f.program)
    return ref


def _factors(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()
            if n.endswith(".default.weight")}


def _compare(method: str, *extra: str) -> tuple[float, float]:
    """Largest |difference| of the micro-batch losses and of the factors after two steps of two
    micro-batches and an evaluation forward, retain's `method` against the reference."""
    model, plugin, ctx = _at_task_2(method, *extra)
    ref = _reference_of(model, plugin)
    ours = _train(model, 2, 2, lambda: plugin.after_step(ctx, None, None))  # type: ignore[arg-type]
    theirs = _train(ref, 2, 2)
    ids, mask = _batch(99)
    model.eval()
    ref.eval()
    with torch.no_grad():  # the reference blends its last pending target here
        logits = model(input_ids=ids, attention_mask=mask).logits
        ref_logits = ref(input_ids=ids, attention_mask=mask).logits
    a, b = _factors(model), _factors(ref)
    assert sorted(a) == sorted(b)
    factors = max(float((a[k] - b[k].to(a[k].dtype)).abs().max()) for k in a)
    losses = max(abs(x - y) for x, y in zip(ours, theirs, strict=True))
    assert float((logits - ref_logits).abs().max()) <= max(factors, losses) * 1e3 + 1e-6
    return losses, factors


def test_procl_paper_matches_the_reference_computation() -> None:
    losses, factors = _compare("procl_paper")
    assert losses < 1e-6 and factors < 1e-6


def test_our_defaults_differ_from_the_reference_where_the_paper_mode_switches() -> None:
    """With the paper's gates, factors and MLP but our consolidation and pooling, the same
    tensors give other factors: the differential test can see both switches."""
    extra = ["procl.gate_init=0", "procl.factors=[lora_A,lora_B]", "procl.adapter_mlp=true"]
    _, factors = _compare("procl", *extra)
    assert factors > 1e-3
    for switch in ("procl.consolidate_every=micro_batch", "procl.pooling=all"):
        _, factors = _compare("procl", *extra, switch)
        assert factors > 3e-5  # one switch alone is not the reference either (9e-5, 2e-2)
    losses, factors = _compare("procl", *extra, "procl.consolidate_every=micro_batch",
                               "procl.pooling=all")
    assert losses < 1e-6 and factors < 1e-6  # the two switches are what paper mode adds


def test_paper_names_override_the_section_and_defaults_stay_ours() -> None:
    cfg = load_config(None, ["model.name_or_path=tiny-random", "methods=[procl_paper]",
                             "procl.gate_init=-3", "procl.slots=2"])
    paper, ours = settings(cfg, "procl_paper"), settings(cfg, "procl")
    assert {k: getattr(paper, k) for k in PAPER} == PAPER
    assert paper.slots == 2  # the other keys come from the section
    assert (ours.gate_init, ours.factors, ours.adapter_mlp) == (-3.0, ["lora_A"], False)
    assert (ours.consolidate_every, ours.pooling) == ("step", "real_tokens")
    assert {n for n, v in VARIANTS.items() if v.paper} == {
        "seq_lora_paper", "procl_paper", "procl_paper_no_w_orig",
        "procl_paper_no_consolidation", "procl_paper_random_routing",
        "procl_paper_uniform_routing",
    }
    for name, v in VARIANTS.items():  # each paper name is its base variant plus `paper`
        if v.paper:
            base = VARIANTS[name.replace("_paper", "", 1)]
            assert (v.programs, v.routing, v.w_orig, v.consolidation) == (
                base.programs, base.routing, base.w_orig, base.consolidation)


def test_seq_lora_paper_has_the_reference_mlp_on_both_factors() -> None:
    model, plugin, ctx = _at_task_2("seq_lora_paper")
    assert len(plugin.factors) == 2 * 2 * 2  # tiny-random: 2 layers × q,v × A,B
    assert all(f.program.mlp_active and not f.program.active for f in plugin.factors)


def test_micro_batch_consolidation_runs_in_one_process_only(monkeypatch) -> None:
    monkeypatch.setattr(Context, "processes", property(lambda self: 2))
    with pytest.raises(ConfigError, match="one process only; this run has 2"):
        _setup("procl_paper")


@pytest.mark.parametrize("method", ["procl_paper", "procl_paper_random_routing"])
def test_paper_mode_trains_end_to_end(tmp_path: Path, method: str) -> None:
    result = run(tiny_config(tmp_path, f"name={method}", f"methods=[{method}]",
                             "data.num_tasks=2", "train.steps_per_task=3", "train.grad_accum=2"))
    steps = step_records(result.run_dir)
    assert len(steps) == 6 and all(torch.isfinite(torch.tensor(r["loss"])) for r in steps)
    log = (result.run_dir / "log.jsonl").read_text()
    assert '"procl_task_start"' in log
    assert (result.run_dir / "adapters" / "task_2" / "procl_adapter_mlp.safetensors").exists()


def test_killed_paper_run_resumes_to_the_same_result(tmp_path: Path) -> None:
    """Consolidation per micro-batch leaves nothing pending between steps, so a run killed in
    mid task 2 (crashed in-process) resumes bit-identical: scores, adapters, MLPs and per-step
    losses."""
    def cli(name: str) -> list[str]:
        return [sys.executable, "-m", "retain", "run", "/dev/null", *TINY,
                f"output_dir={tmp_path}", f"name={name}", "train.checkpoint_every=2",
                "train.steps_per_task=8", "methods=[procl_paper]", "train.grad_accum=2",
                "data.num_tasks=3"]

    resumed = whole_beside_crashed_and_resumed(lambda name: cli(name)[3:], tmp_path)
    assert re.search(r"from task 2 step [2-6] \(train\)", resumed)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert (whole / "scores.csv").read_text() == (killed / "scores.csv").read_text()
    for t in range(1, 4):
        for file in ("adapter_model.safetensors", "procl_adapter_mlp.safetensors"):
            path = Path("adapters") / f"task_{t}" / file
            if t == 1 and file.startswith("procl"):
                continue  # task 1 is plain LoRA: no MLP yet
            a, b = load_file(str(whole / path)), load_file(str(killed / path))
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), (t, file)
    keys = ("step", "loss", "losses")
    assert [[r[k] for k in keys] for r in step_records(whole)] == \
        [[r[k] for k in keys] for r in step_records(killed)]
