"""LwF: the distillation term against a direct computation, the teacher frozen and restored on
resume, and a run with `fixed` replay (docs/methods/lwf.md)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from retain.config import load_config
from retain.methods.lwf.distill import distillation
from retain.methods.lwf.plugin import LwFPlugin
from retain.train.loop import ContinualTrainer, run
from retain.train.step import LossScales
from tests.test_engine import TINY


def test_distillation_is_the_mean_kl_from_teacher_to_student_at_temperature() -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(5, 7), torch.randn(5, 7)
    by_hand = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist(), strict=True):
        zs = sum(math.exp(v / 2) for v in s_row)
        zt = sum(math.exp(v / 2) for v in t_row)
        for s, t in zip(s_row, t_row, strict=True):
            p, q = math.exp(t / 2) / zt, math.exp(s / 2) / zs
            by_hand += p * (math.log(p) - math.log(q))
    assert float(distillation(student, teacher, 2.0)) == pytest.approx(by_hand, rel=1e-5)
    assert float(distillation(teacher, teacher, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation(student[:0], teacher[:0], 2.0)) == 0.0


def _trainer(tmp_path: Path, *extra: str) -> ContinualTrainer:
    return ContinualTrainer(load_config(None, [*TINY, f"output_dir={tmp_path}",
                                              "methods=[lwf]", *extra]))


def _perturb(model: torch.nn.Module, scale: float = 0.05) -> None:
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn_like(p))


def test_lwf_loss_on_current_rows_matches_a_direct_computation(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, "lwf.weight=0.5", "lwf.temperature=3")
    ctx, plugin = trainer.parts.ctx, trainer.parts.plugins[0]
    assert isinstance(plugin, LwFPlugin)
    ctx.task_index = 0
    plugin.on_task_end(ctx, trainer.parts.stream.tasks[0])  # teacher: the model after task 1
    assert plugin.teacher is not None
    teacher = plugin.teacher.model
    frozen = {n: p.detach().clone() for n, p in plugin.teacher.owned.items()}
    torch.manual_seed(1)
    _perturb(ctx.inner_model, 0.5)  # a KL well above float32 rounding
    ctx.task_index = 1
    rows = ctx.task_samples[1][:2] + ctx.task_samples[0][:1]  # two current rows, one replayed
    batch = ctx.rows(rows)
    outputs = ctx.forward(batch, logits=True)
    loss = plugin.extra_loss(ctx, batch, outputs)["lwf"]
    with torch.no_grad():
        t_logits = teacher(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    assert outputs.logits is not None
    total, positions = 0.0, 0
    for r in range(2):  # the replayed row (task 0) is not distilled
        for i in range(batch.labels.shape[1] - 1):
            if batch.labels[r, i + 1] == -100:
                continue
            p = torch.softmax(t_logits[r, i].double() / 3, -1)
            q = torch.softmax(outputs.logits[r, i].detach().double() / 3, -1)
            total += float((p * (p.log() - q.log())).sum())
            positions += 1
    assert positions > 0  # a sum over the current answer tokens, scaled like the task NLL
    assert float(loss.detach()) == pytest.approx(0.5 * total, rel=1e-4)
    scales = LossScales(task=1 / 40, micro_batches=3)  # 40 task answer tokens in the step
    assert float(scales.weigh(plugin, batch, loss).detach()) == pytest.approx(0.5 * total / 40,
                                                                              rel=1e-4)
    loss.backward()  # the student learns, the teacher is frozen and unchanged
    assert any(p.grad is not None for p in ctx.inner_model.parameters() if p.requires_grad)
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert all(torch.equal(frozen[n], p) for n, p in plugin.teacher.owned.items())
    only_replayed = ctx.rows(ctx.task_samples[0][:2])
    out = ctx.forward(only_replayed, logits=True)
    assert float(plugin.extra_loss(ctx, only_replayed, out)["lwf"].detach()) == 0.0


def test_no_teacher_in_the_first_task_and_the_teacher_survives_a_resume(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path)
    ctx, plugin = trainer.parts.ctx, trainer.parts.plugins[0]
    ctx.task_index = 0
    batch = ctx.rows(ctx.task_samples[0][:2])
    assert plugin.extra_loss(ctx, batch, ctx.forward(batch, logits=True)) == {}
    plugin.on_task_end(ctx, trainer.parts.stream.tasks[0])
    torch.manual_seed(2)
    _perturb(ctx.inner_model)
    ctx.task_index = 1
    batch = ctx.rows(ctx.task_samples[1][:2])
    with torch.no_grad():
        out = ctx.forward(batch, logits=True)
        before = plugin.extra_loss(ctx, batch, out)["lwf"]
    state = plugin.state_dict()
    fresh = LwFPlugin(trainer.parts.config, "lwf")
    fresh.load_state_dict(state)
    assert fresh.state_dict()["teacher"] is state["teacher"]  # a checkpoint before the start
    fresh.on_task_start(ctx, trainer.parts.stream.tasks[1])
    with torch.no_grad():
        after = fresh.extra_loss(ctx, batch, out)["lwf"]
    assert float(before) > 0 and torch.equal(before, after)


def test_lwf_with_fixed_replay_in_one_run(tmp_path: Path) -> None:
    cfg = load_config(None, [*TINY, f"output_dir={tmp_path}", "name=lwf",
                             "methods=[fixed,lwf]", "replay.interval_units=0",
                             "data.num_tasks=3"])
    result = run(cfg)
    records = [json.loads(x) for x in (result.run_dir / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["type"] == "step"]
    assert all("lwf" not in r["losses"] for r in steps if r["task"] == 0)
    later = [r["losses"]["lwf"] for r in steps if r["task"] > 0]
    assert later and all(v >= 0 for v in later) and max(later) > 0
    assert sum(r["replayed"] for r in steps) > 0
    ends = [r for r in records if r["type"] == "task_end"]
    assert ends[-1]["counters"]["extra_forward_passes"] >= 12  # a teacher pass per step
    assert result.metrics["ap"] is not None
