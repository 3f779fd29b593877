"""`gere_paper`: GeRe weighted as its reference code weights it, against a re-implementation of
that code's loss on identical tensors (docs/methods/gere_paper.md).

The reference is Qznan/GeRe, `gere/gere_trainer.py` at commit 34d74f5 (read, not copied):
`GeReTrainer.compute_loss` (lines 565-605: the micro-batch's task rows and GeRe rows are two
forwards; `total_ce` is their sum, halved when the micro-batch holds both (593-594); with
`w_strategy == 'dy'`, w = total_ce / (margin + 1e-8) as plain numbers (596-601)),
`compute_gere_loss` (464-563: the GeRe rows' CE is a token mean over every shifted label
(488-503); the margin loss compares the last hidden state with the per-dimension thresholds
mean ± std of the base model's states (534-547), masked by the attention mask and divided by
the number of non-zero elements (549-552)), and `init_margin_loss_thres` (427-436). HF Trainer
averages the micro-batches' losses over the accumulation steps; `concat` mixing is the
reference's default (`num_interpolate_per_batch=0`, `_get_train_sampler`, 636-640).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from retain.config import load_config
from retain.data.encoding import Batch, BatchPlan, collate
from retain.methods.gere.config import PAPER
from retain.methods.gere.plugin import GeneralReplayPlugin
from retain.train.batches import StepPlan
from retain.train.loop import ContinualTrainer, run
from retain.train.step import LossScales, accumulate_gradients
from tests.test_gere_loop import events, gere_config

EPS = 1e-8


def _trainer(tmp_path: Path, method: str, *extra: str) -> ContinualTrainer:
    """A tiny LoRA run with its replay set and targets built, the adapter moved off the base
    model (so TM is not 0)."""
    cfg = gere_config(tmp_path, f"name={method}", f"methods=[{method}]", "data.num_tasks=1",
                      "train.mixed_precision='no'", "model.lora.dropout=0.0", "general.size=4",
                      "train.batch_size=4", "train.grad_accum=3", "seed=5", *extra)
    trainer = ContinualTrainer(cfg)
    trainer.parts.plugins[0].on_stream_start(trainer.parts.ctx)
    model = trainer.parts.inner_model()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return trainer


def _micro_batches(trainer: ContinualTrainer) -> tuple[StepPlan, list[Batch]]:
    """Three micro-batches: 3 task rows + 1 general row, 4 task rows, 3 general rows."""
    plugin = trainer.parts.plugins[0]
    assert isinstance(plugin, GeneralReplayPlugin)
    task = list(trainer.parts.ctx.task_samples[0])
    general = [plugin.store_first + i for i in range(4)]
    rows = [[task[0], general[0], task[1], task[2]], task[3:7], general[1:4]]
    plans = [BatchPlan(r, [False] * len(r)) for r in rows]
    store = trainer.parts.store
    flat = [i for r in rows for i in r]
    plan = StepPlan(
        plans=plans,
        loss_tokens=sum(store.loss_tokens[i] for i in flat if store.task_of[i] >= 0),
        tokens=0,
        samples=len(flat),
        replayed=0,
        general_rows=sum(1 for i in flat if store.task_of[i] < 0),
        general_tokens=sum(store.loss_tokens[i] for i in flat if store.task_of[i] < 0),
    )
    pad = int(trainer.parts.tokenizer.pad_token_id)
    return plan, [collate(store, p, pad) for p in plans]


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    out = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


def _ours(trainer: ContinualTrainer) -> tuple[float, dict[str, torch.Tensor]]:
    plan, batches = _micro_batches(trainer)
    trainer.parts.model.train()
    losses, _ = accumulate_gradients(trainer.parts, batches, LossScales.of(plan, 1),
                                     trainer.parts.plugins_with("extra_loss"))
    return sum(float(v) for v in losses.values()), _grads(trainer.parts.model)


def _rows(batch: Batch, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = int(batch.attention_mask[rows].sum(1).max())
    return (batch.input_ids[rows][:, :width], batch.attention_mask[rows][:, :width],
            batch.labels[rows][:, :width])


def _reference(trainer: ContinualTrainer) -> tuple[float, dict[str, torch.Tensor], list[float]]:
    """The reference's step loss on the same rows and weights; also, per mixed micro-batch, the
    ratio of its weighted TM term to its task CE term."""
    plugin = trainer.parts.plugins[0]
    assert isinstance(plugin, GeneralReplayPlugin)
    tau_pos, tau_neg = plugin.moments["tau_pos"].float(), plugin.moments["tau_neg"].float()
    model = trainer.parts.inner_model()
    model.train()
    _, batches = _micro_batches(trainer)
    total, ratios = 0.0, []
    for batch in batches:
        general = batch.task_ids < 0
        ce = []
        if bool((~general).any()):  # the task rows' own forward, HF's token-mean loss
            ids, mask, labels = _rows(batch, ~general)
            ce.append(model(input_ids=ids, attention_mask=mask, labels=labels).loss)
        margin = None
        if bool(general.any()):
            ids, mask, _ = _rows(batch, general)
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            target = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
            nll = F.cross_entropy(out.logits[:, :-1].reshape(-1, out.logits.shape[-1]),
                                  target.reshape(-1), reduction="none")
            ce.append(nll.sum() / ((target != -100).sum() + EPS))
            with torch.no_grad(), model.disable_adapter():
                base = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            h0, h = base.hidden_states[-1], out.hidden_states[-1]
            below, above = h0 <= tau_neg, h0 >= tau_pos
            inside = ~below & ~above
            element = (torch.relu(h - tau_neg) * below + torch.relu(tau_pos - h) * above
                       + (torch.relu(h - tau_pos) + torch.relu(tau_neg - h)) * inside)
            element = element * mask.unsqueeze(-1)
            margin = element.sum() / ((element != 0).sum() + EPS)
        total_ce = sum(ce) / len(ce)
        loss = total_ce
        if margin is not None:
            w = total_ce.item() / (margin.item() + EPS)
            loss = total_ce + w * margin
            if len(ce) == 2:
                ratios.append(w * margin.item() / (ce[0].item() / 2))
        (loss / len(batches)).backward()
        total += float(loss.detach()) / len(batches)
    return total, _grads(model), ratios


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert sorted(a) == sorted(b) and a
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_gere_paper_matches_the_reference_loss_and_gradients(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, "gere_paper")
    try:
        loss, grads = _ours(trainer)
        ref_loss, ref_grads, _ = _reference(trainer)
    finally:
        trainer.close()
    assert loss == pytest.approx(ref_loss, abs=1e-6)
    scale = max(float(g.abs().max()) for g in ref_grads.values())
    assert _max_diff(grads, ref_grads) <= 1e-6 * max(scale, 1.0)


def test_our_weighting_is_not_the_reference_on_the_same_rows(tmp_path: Path) -> None:
    """`gere` with the paper's loss, weight and mixing but per-row weighting: another step,
    and a TM term several times smaller against the task loss."""
    trainer = _trainer(tmp_path, "gere", *(f"general.{k}={v}" for k, v in PAPER.items()))
    try:
        loss, grads = _ours(trainer)
        ref_loss, ref_grads, ratios = _reference(trainer)
    finally:
        trainer.close()
    assert abs(loss - ref_loss) > 1e-3
    assert _max_diff(grads, ref_grads) > 1e-4
    assert len(ratios) == 1 and ratios[0] > 1.0  # the reference's TM term outweighs its CE


def test_gere_paper_settings_override_the_section(tmp_path: Path) -> None:
    cfg = load_config(None, ["model.name_or_path=tiny-random", "methods=[gere_paper]",
                             "general.weight=1", "general.mixing=per_batch", "general.size=7"])
    plugin = GeneralReplayPlugin(cfg, "gere_paper")
    assert (plugin.loss, plugin.weight, plugin.k) == ("tm", "dy", 0)
    assert plugin.ce_per_micro_batch and plugin.loss_weighting == "micro_batch"
    ours = GeneralReplayPlugin(cfg, "gere")
    assert (ours.weight, ours.k, ours.ce_per_micro_batch) == (1.0, 2, False)
    assert ours.loss_weighting == "general_rows"


def test_gere_paper_trains_end_to_end(tmp_path: Path) -> None:
    result = run(gere_config(tmp_path, "name=paper", "methods=[gere_paper]", "data.num_tasks=2",
                             "general.size=8", "train.grad_accum=2"))
    steps = events(result.run_dir, "step")
    assert steps and all({"task", "general_lm", "general_tm"} <= set(r["losses"]) for r in steps)
    assert sum(r.get("general", 0) for r in steps) > 0  # replay rows were trained
    later = events(result.run_dir, "general_replay")
    assert later and all(r["w"] > 0 for r in later)
