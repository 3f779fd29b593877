"""The loss- and accuracy-triggered replay baselines, on crafted losses and probe scores."""

from __future__ import annotations

import pytest

from retain.config import RunConfig
from retain.data.encoding import BatchPlan
from retain.data.task import Example, Task
from retain.methods.base import Context
from retain.methods.replay.plugin import build_replay_plugin
from tests.test_replay_plugin import (
    make_config,
    make_ctx,
    replay_steps,
    run_steps,
    run_task,
    start_task,
)


def test_loss_triggered_on_crafted_losses():
    # unit = 2 steps (40 steps). The loss is 1.0 except a spike to 3.0 in the step with index 9.
    config = make_config("loss_triggered", buffer_size=10)
    plugin = build_replay_plugin(config, "loss_triggered")
    ctx, events = make_ctx(config, n_tasks=2)

    def spiky(c: Context, plan: BatchPlan) -> list[float]:
        # replay rows get a huge loss: they must not feed the trigger
        step = c.task_step - 1
        base = 3.0 if step == 9 else 1.0
        return [50.0 if r else base for r in plan.is_replay]

    run_task(plugin, ctx, 0, 40, loss_fn=spiky)  # spikes too, but no buffer: no event
    assert events == []
    plans = run_task(plugin, ctx, 1, 40, loss_fn=spiky)
    # after step index 9 (10 completed): 3.0 > 1.2 * EMA -> event over steps [10, 12)
    assert replay_steps(plans) == [10, 11]
    assert events[0]["task_step"] == 10 and events[0]["trigger"] == "loss"


def test_loss_trigger_aggregates_gradient_accumulation():
    config = RunConfig.model_validate(
        {"methods": ["loss_triggered"], "train": {"batch_size": 4, "grad_accum": 2}}
    )
    plugin = build_replay_plugin(config, "loss_triggered")
    ctx, events = make_ctx(config, n_tasks=2)
    calls = [0]

    def alternating(c: Context, plan: BatchPlan) -> list[float]:
        # micro-batch losses 1.0, 3.0, 1.0, 3.0, …: each optimizer step averages 2.0
        calls[0] += 1
        return [1.0 if calls[0] % 2 else 3.0] * len(plan.sample_ids)

    run_task(plugin, ctx, 0, 10, batch_size=4, accum=2, loss_fn=alternating)
    plans = run_task(plugin, ctx, 1, 10, batch_size=4, accum=2, loss_fn=alternating)
    # one EMA update per optimizer step: the EMA is exactly 2.0 and nothing fires (fed per
    # micro-batch, 3.0 > 1.2 × EMA would start events)
    assert plugin.trigger.ema == pytest.approx(2.0)
    assert plugin.pending_loss == [0.0, 0.0, 0]
    assert replay_steps(plans) == [] and events == []


def test_accuracy_triggered_probes_and_costs():
    config = make_config("accuracy_triggered", buffer_size=10, probe_size=4)
    plugin = build_replay_plugin(config, "accuracy_triggered")
    ctx, events = make_ctx(config, n_tasks=2)
    asked: list[tuple[str, list[Example]]] = []
    quality = {"task0": [1.0, 1.0, 1.0, 1.0]}

    def score(task: Task, examples: list[Example]) -> list[float]:
        asked.append((task.name, examples))
        ctx.count("extra_forward_passes", len(examples))
        return quality.get(task.name, [0.0] * len(examples))[: len(examples)]

    ctx.score_examples = score
    run_task(plugin, ctx, 0, 20)  # unit = 1 step; nothing to probe during task 0
    assert [a[0] for a in asked] == ["task0"]  # its end-of-task baseline: 100 points
    assert asked[0][1] == ctx.stream.tasks[0].valid[:4]  # the valid split, never test
    assert plugin.trigger.best == {0: 100.0}
    start_task(plugin, ctx, 1, 20)
    run_steps(plugin, ctx, range(3))  # probes after steps 1, 2, 3 at 100 points
    quality["task0"] = [1.0, 1.0, 1.0, 0.0]  # 75 points: 25 below its best
    plans = run_steps(plugin, ctx, range(3, 6))
    # the probe after 4 steps drops -> a one-unit (1-step) event on step index 4; the fake
    # model does not recover, so the probe after 5 steps starts another on step index 5
    assert replay_steps(plans) == [1, 2]
    assert [e["task_step"] for e in events if e["type"] == "replay_event"] == [4, 5]
    probes = [e for e in events if e["type"] == "replay_probe"]
    assert probes[3]["dropped"] == [0] and probes[3]["triggered"] is True
    assert probes[3]["scores"] == {"0": 75.0} and probes[3]["best"] == {"0": 100.0}
    assert ctx.counters["extra_forward_passes"] == 4 * (1 + 6)
    # the last task of the stream is not probed at its end (nothing would use its baseline)
    run_steps(plugin, ctx, range(6, 20))
    before = len(asked)
    plugin.on_task_end(ctx, ctx.stream.tasks[1])
    assert len(asked) == before and 1 not in plugin.trigger.best


def test_accuracy_probe_falls_back_to_train_without_valid():
    config = make_config("accuracy_triggered", probe_size=3)
    plugin = build_replay_plugin(config, "accuracy_triggered")
    ctx, events = make_ctx(config, n_tasks=3, valid=False)
    asked: list[list[Example]] = []
    ctx.score_examples = lambda task, ex: asked.append(ex) or [1.0] * len(ex)
    run_task(plugin, ctx, 0, 20)
    run_task(plugin, ctx, 1, 5)
    assert all(ex == ctx.stream.tasks[0].train[:3] for ex in asked[:2])
    fallbacks = [e for e in events if e["type"] == "replay_probe_fallback"]
    assert [e["task"] for e in fallbacks] == [0, 1]  # once per task


def test_accuracy_trigger_requires_a_scorer():
    config = make_config("accuracy_triggered")
    plugin = build_replay_plugin(config, "accuracy_triggered")
    ctx, _ = make_ctx(config)
    with pytest.raises(RuntimeError, match="score_examples"):
        start_task(plugin, ctx, 0, 10)
