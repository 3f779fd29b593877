"""ProCL inside a real PEFT LoRA model (tiny Llama): the wrapped layers execute W_exec in
training and plain LoRA with the consolidated factors in evaluation; consolidation follows the
EMA rule after an optimizer step; the adapter reloads in plain PEFT; each ablation does what
its name says."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel

from retain.config import load_config
from retain.methods.base import Context
from retain.methods.procl.plugin import MLP_FILE, ProCLPlugin, build_adapter_plugin
from retain.methods.procl.program import executing_weight, masked_mean, pooling_weights
from retain.models.adapters import prepare_for_finetuning
from retain.models.tiny import tiny_model_and_tokenizer

BOTH = "procl.factors=[lora_A,lora_B]"
"""The mechanism is tested on both factors (the reference's decoder setting)."""


def _setup(method: str = "procl", *extra: str) -> tuple[torch.nn.Module, ProCLPlugin, Context]:
    cfg = load_config(None, ["model.name_or_path=tiny-random", "model.lora.dropout=0.0",
                             f"methods=[{method}]", BOTH, *extra])
    model, _ = tiny_model_and_tokenizer()
    model = prepare_for_finetuning(model, cfg.model)
    plugin = build_adapter_plugin(cfg, method)
    assert isinstance(plugin, ProCLPlugin)
    ctx = Context(config=cfg, stream=[None] * 3, store=None, task_samples=[],  # type: ignore[arg-type]
                  device=torch.device("cpu"))
    return plugin.wrap_model(ctx, model), plugin, ctx


def _start(plugin: ProCLPlugin, ctx: Context, t: int) -> None:
    ctx.task_index = t
    plugin.on_task_start(ctx, None)  # type: ignore[arg-type]


def _batch(seed: int = 0, rows: int = 3, length: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 256, (rows, length), generator=g)
    mask = torch.ones(rows, length, dtype=torch.long)
    mask[1, 5:] = 0  # right padding, as the loop collates
    mask[2, 3:] = 0
    return ids, mask


def _train_steps(model: torch.nn.Module, plugin: ProCLPlugin, ctx: Context, steps: int) -> None:
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    for s in range(steps):
        ids, mask = _batch(s)
        model(input_ids=ids, attention_mask=mask, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
        ctx.global_step += 1
        plugin.after_step(ctx, None, None)  # type: ignore[arg-type]


def _plain_lora_like(model: torch.nn.Module) -> torch.nn.Module:
    """A plain PEFT LoRA model holding the wrapped model's factors (M) by name."""
    cfg = load_config(None, ["model.name_or_path=tiny-random", "model.lora.dropout=0.0"])
    plain = prepare_for_finetuning(tiny_model_and_tokenizer()[0], cfg.model)
    source = dict(model.named_parameters())
    with torch.no_grad():
        for name, p in plain.named_parameters():
            if "lora_" in name:
                p.copy_(source[name])
    return plain.eval()


def _layer(model: torch.nn.Module, i: int = 0, name: str = "q_proj") -> torch.nn.Module:
    return getattr(model.base_model.model.model.layers[i].self_attn, name)


def test_task_1_trains_plain_lora() -> None:
    model, plugin, ctx = _setup()
    _start(plugin, ctx, 0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    _train_steps(model, plugin, ctx, 2)
    model.train()  # training mode, and still exactly plain LoRA
    ids, mask = _batch(9)
    ours = model(input_ids=ids, attention_mask=mask).logits
    plain = _plain_lora_like(model).train()
    assert torch.equal(ours, plain(input_ids=ids, attention_mask=mask).logits)


def test_wrapped_layer_executes_gamma_w_orig_plus_routed_slots() -> None:
    """One LoRA layer, known inputs: output = base(x) + s·(x A_execᵀ) B_execᵀ, where A's router
    pools x and B's router pools A_exec's output, both over the real tokens."""
    model, plugin, ctx = _setup()
    _start(plugin, ctx, 0)
    _train_steps(model, plugin, ctx, 2)  # so that B is no longer zero
    _start(plugin, ctx, 1)
    _train_steps(model, plugin, ctx, 1)  # gates, γ and router move away from their init
    model.train()
    layer = _layer(model)
    prog_a, prog_b = layer.procl["A"], layer.procl["B"]
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    x = torch.randn(2, 5, a.shape[1])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    plugin.routing.set_mask(mask)
    out = layer(x)

    def by_hand(program: torch.nn.Module, memory: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
        attention = program.attention(masked_mean(inp, mask)).mean(dim=0)
        alpha = attention * torch.sigmoid(program.gates)
        gamma = torch.sigmoid(program.gamma_logit)
        rows = memory.shape[0] // 4
        blocks = []
        for h in range(4):
            block = gamma * program.w_orig[h * rows : (h + 1) * rows]
            for n in range(4):
                block = block + alpha[h, n] * memory[n * rows : (n + 1) * rows]
            blocks.append(block)
        return torch.cat(blocks)

    a_exec = by_hand(prog_a, a, x)
    hidden = F.linear(x, a_exec)
    b_exec = by_hand(prog_b, b, hidden)
    expected = layer.base_layer(x) + F.linear(hidden, b_exec) * layer.scaling["default"]
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(a_exec, a, atol=1e-4)  # training really routes
    torch.testing.assert_close(prog_a.pending, a_exec.detach())  # T of this forward
    model.eval()
    plain = layer.base_layer(x) + F.linear(F.linear(x, a), b) * layer.scaling["default"]
    assert torch.equal(layer(x), plain)  # evaluation: plain LoRA with M, no routing


def test_the_attention_mask_reaches_the_factors() -> None:
    """A right-padded row routes like the same row alone (the hook hands the mask over)."""
    model, plugin, ctx = _setup()
    _start(plugin, ctx, 0)
    _start(plugin, ctx, 1)
    model.train()
    prog = _layer(model).procl["A"]
    ids = torch.randint(0, 256, (1, 4))
    padded = torch.cat([ids, torch.full((1, 3), 258)], dim=1)
    with torch.no_grad():  # no T is recorded without gradients
        model(input_ids=ids, attention_mask=torch.ones(1, 4, dtype=torch.long))
    assert prog.pending is None
    model(input_ids=ids, attention_mask=torch.ones(1, 4, dtype=torch.long))
    alone = prog.pending
    model(input_ids=padded, attention_mask=torch.tensor([[1, 1, 1, 1, 0, 0, 0]]))
    torch.testing.assert_close(prog.pending, alone, rtol=0, atol=1e-6)
    model(input_ids=padded, attention_mask=torch.ones(1, 7, dtype=torch.long))
    assert not torch.allclose(prog.pending, alone, atol=1e-6)  # pads pooled: different α


def test_consolidation_after_an_optimizer_step_is_the_ema_rule() -> None:
    model, plugin, ctx = _setup()
    _start(plugin, ctx, 0)
    _train_steps(model, plugin, ctx, 1)
    _start(plugin, ctx, 1)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    ids, mask = _batch(3)
    model(input_ids=ids, attention_mask=mask, labels=ids).loss.backward()
    factors = plugin.factors
    targets = [f.program.pending.clone() for f in factors]
    opt.step()
    updated = [f.memory.detach().clone() for f in factors]
    plugin.after_step(ctx, None, None)  # type: ignore[arg-type]
    for f, m_upd, target in zip(factors, updated, targets, strict=True):
        torch.testing.assert_close(f.memory.detach(), 0.1 * m_upd + 0.9 * target, rtol=0,
                                   atol=1e-7)
        assert f.program.pending is None
    before = [f.memory.detach().clone() for f in factors]
    plugin.after_step(ctx, None, None)  # type: ignore[arg-type]  # next micro-batch: nothing
    assert all(torch.equal(f.memory, m) for f, m in zip(factors, before, strict=True))


def test_eval_is_plain_lora_with_the_consolidated_factors_and_reloads_in_peft(
    tmp_path: Path,
) -> None:
    model, plugin, ctx = _setup()
    for t in range(3):
        _start(plugin, ctx, t)
        _train_steps(model, plugin, ctx, 2)
    model.eval()
    ids, mask = _batch(11)
    ours = model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(ours, _plain_lora_like(model)(input_ids=ids, attention_mask=mask).logits)
    plugin.export_adapter(ctx, model, tmp_path / "adapter")
    assert not (tmp_path / "adapter" / MLP_FILE).exists()
    reloaded = PeftModel.from_pretrained(tiny_model_and_tokenizer()[0], str(tmp_path / "adapter"))
    reloaded.eval()
    assert torch.equal(reloaded(input_ids=ids, attention_mask=mask).logits, ours)
    merged = reloaded.merge_and_unload()
    torch.testing.assert_close(merged(input_ids=ids, attention_mask=mask).logits, ours,
                               rtol=0, atol=1e-5)


def _alpha_of_pending(plugin: ProCLPlugin) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, M) of the first wrapped factor after a training forward."""
    f = plugin.factors[0]
    return f.program.pending, f.memory.detach()


def test_no_w_orig_executes_the_routed_slots_only() -> None:
    model, plugin, ctx = _setup("procl_no_w_orig")
    _start(plugin, ctx, 0)
    _train_steps(model, plugin, ctx, 1)
    _start(plugin, ctx, 1)
    model.train()
    prog = plugin.factors[0].program
    assert not prog.gamma_logit.requires_grad and prog.router.inp.weight.requires_grad
    ids, mask = _batch(2)
    model(input_ids=ids, attention_mask=mask)
    x_seen = {}
    hook = plugin.factors[0].factor.register_forward_pre_hook(
        lambda m, args: x_seen.setdefault("x", args[0]))
    model(input_ids=ids, attention_mask=mask)
    hook.remove()
    alpha = prog.alpha(x_seen["x"], pooling_weights(mask, torch.float32), None)
    target, memory = _alpha_of_pending(plugin)
    expected = executing_weight(memory, alpha, torch.zeros_like(memory), 0.0)
    torch.testing.assert_close(target, expected.detach(), rtol=0, atol=1e-7)


def test_no_consolidation_leaves_m_to_the_optimizer() -> None:
    model, plugin, ctx = _setup("procl_no_consolidation")
    _start(plugin, ctx, 0)
    _start(plugin, ctx, 1)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids, mask = _batch(4)
    model(input_ids=ids, attention_mask=mask, labels=ids).loss.backward()
    assert all(f.program.pending is None for f in plugin.factors)  # nothing is kept
    opt.step()
    updated = [f.memory.detach().clone() for f in plugin.factors]
    plugin.after_step(ctx, None, None)  # type: ignore[arg-type]
    assert all(torch.equal(f.memory, m) for f, m in zip(plugin.factors, updated, strict=True))
    assert plugin.factors[0].program.router.inp.weight.grad is not None  # routing still learns


def test_uniform_routing_weights_are_one_over_n_times_the_gates() -> None:
    model, plugin, ctx = _setup("procl_uniform_routing")
    _start(plugin, ctx, 0)
    _start(plugin, ctx, 1)
    prog = plugin.factors[0].program
    assert not prog.router.inp.weight.requires_grad and not prog.keys.requires_grad
    assert prog.gates.requires_grad and prog.gamma_logit.requires_grad
    with torch.no_grad():
        prog.gates.copy_(torch.tensor([0.3, -1.0, 2.0, 0.0]))
    alpha = prog.alpha(torch.randn(2, 3, prog.d), None, None)
    expected = torch.full((4, 4), 0.25) * torch.sigmoid(prog.gates).unsqueeze(0)
    torch.testing.assert_close(alpha, expected)


def test_random_routing_draws_once_per_step_from_the_seed() -> None:
    model, plugin, ctx = _setup("procl_random_routing")
    _start(plugin, ctx, 0)
    _start(plugin, ctx, 1)
    model.train()
    prog = plugin.factors[0].program
    assert not prog.router.inp.weight.requires_grad and prog.gates.requires_grad
    ctx.global_step = 7
    model(input_ids=_batch(1)[0], attention_mask=_batch(1)[1])
    first = prog.pending
    model(input_ids=_batch(2)[0], attention_mask=_batch(2)[1])  # next micro-batch, same step
    assert torch.equal(prog.pending, first)  # α depends on the step, not on the rows
    ctx.global_step = 8
    model(input_ids=_batch(1)[0], attention_mask=_batch(1)[1])
    assert not torch.equal(prog.pending, first)
    # α/σ(s) is a draw on the simplex: every head's weights sum to 1
    gen = plugin.routing.generator(plugin.factors[0].factor.index)
    alpha = prog.alpha(torch.zeros(1, 1, prog.d), None, gen)
    torch.testing.assert_close((alpha / torch.sigmoid(prog.gates)).sum(dim=1), torch.ones(4))


def test_seq_lora_is_plain_lora_unless_the_adapter_mlp_is_asked_for(tmp_path: Path) -> None:
    cfg = load_config(None, ["model.name_or_path=tiny-random", "methods=[seq_lora]"])
    assert build_adapter_plugin(cfg, "seq_lora") is None
    model, plugin, ctx = _setup("seq_lora", "procl.adapter_mlp=true")
    _start(plugin, ctx, 0)
    assert all(not p.requires_grad for f in plugin.factors for p in f.program.parameters())
    _train_steps(model, plugin, ctx, 1)
    ids, mask = _batch(5)
    model.eval()
    plain = _plain_lora_like(model)(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(model(input_ids=ids, attention_mask=mask).logits, plain)  # task 1
    _start(plugin, ctx, 1)
    assert all(p.requires_grad for f in plugin.factors for p in f.program.mlp.parameters())
    assert all(f.program.router is None for f in plugin.factors)  # no programs for seq_lora
    model.eval()
    with_mlp = model(input_ids=ids, attention_mask=mask).logits
    assert not torch.allclose(with_mlp, plain)  # the MLP runs at inference from task 2
    plugin.export_adapter(ctx, model, tmp_path / "a")
    assert (tmp_path / "a" / MLP_FILE).exists()
    assert (tmp_path / "a" / "adapter_config.json").exists()


def test_slots_must_divide_the_factor_rows() -> None:
    with pytest.raises(ValueError, match=r"procl.slots=4 must divide the 6 rows .*lora_A"):
        _setup("procl", "model.lora.r=6")


def test_state_round_trip_keeps_a_task_in_progress() -> None:
    """A mid-task resume: the restored programs survive the repeated on_task_start."""
    model, plugin, ctx = _setup()
    _start(plugin, ctx, 0)
    _start(plugin, ctx, 1)
    _train_steps(model, plugin, ctx, 2)
    state = plugin.state_dict()
    other_model, other, other_ctx = _setup()
    other.load_state_dict(state)
    _start(other, other_ctx, 1)
    for f, g in zip(plugin.factors, other.factors, strict=True):
        for (k, a), b in zip(f.program.state_dict().items(), g.program.state_dict().values(),
                             strict=True):
            assert torch.equal(a, b), k
        assert g.program.active and g.program.router.inp.weight.requires_grad


def test_procl_factors_chooses_which_factors_are_wrapped() -> None:
    """`procl.factors: [lora_A]`, the default, wraps A only (the reference's choice on
    Flan-T5; ProCLConfig says why it is the default)."""
    assert load_config(None, []).procl.factors == ["lora_A"]
    model, plugin, ctx = _setup("procl", "procl.factors=[lora_A]")
    layer = _layer(model)
    assert set(layer.procl.keys()) == {"A"}
    assert type(layer.lora_B["default"]) is torch.nn.Linear
    assert len(plugin.factors) == 4 and all(f.key.endswith(".lora_A") for f in plugin.factors)
    _start(plugin, ctx, 0)
    _start(plugin, ctx, 1)
    _train_steps(model, plugin, ctx, 1)
