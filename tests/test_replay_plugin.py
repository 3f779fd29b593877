"""ReplayPlugin driven by a hand-built Context and fake step outputs (no model)."""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pytest
import torch

from retain.config import RunConfig
from retain.data.encoding import Batch, BatchPlan, SampleStore
from retain.data.task import Example, Task, TaskStream
from retain.methods.base import Context, StepOutputs
from retain.methods.replay.plugin import ReplayPlugin, build_replay_plugin
from retain.methods.replay.schedule import (
    AccuracyTrigger,
    ExpandingSchedule,
    FixedSchedule,
    LossTrigger,
)

POOL = 30  # training samples per task


def make_config(method: str, **replay: Any) -> RunConfig:
    data: dict[str, Any] = {"methods": [method], "train": {"batch_size": 8}, "seed": 7}
    if replay:
        data["replay"] = replay
    return RunConfig.model_validate(data)


def make_ctx(config: RunConfig, n_tasks: int = 3, valid: bool = True) -> tuple[Context, list]:
    tasks = []
    store = SampleStore()
    pools = []
    for t in range(n_tasks):
        examples = [Example(f"t{t} q{i}", f"a{i}") for i in range(POOL)]
        tasks.append(
            Task(
                name=f"task{t}",
                train=examples,
                test=[Example(f"t{t} test{i}", "x") for i in range(4)],
                scoring="generate",
                metric="exact_match",
                valid=[Example(f"t{t} v{i}", "y") for i in range(40)] if valid else [],
            )
        )
        pools.append([store.add([1, 2, 3], [-100, 2, 3], t) for _ in range(POOL)])
    events: list[dict[str, Any]] = []
    ctx = Context(
        config=config,
        stream=TaskStream("toy", tasks),
        store=store,
        task_samples=pools,
        device=torch.device("cpu"),
        log_event=events.append,
    )
    return ctx, events


def outputs_for(losses: list[float]) -> StepOutputs:
    per_sample = torch.tensor(losses, dtype=torch.float32, requires_grad=True)
    return StepOutputs(
        logits=torch.zeros(1),
        per_sample_loss=per_sample,
        answer_tokens=torch.tensor(2 * len(losses)),
        task_loss=per_sample.mean(),
    )


def batch_of(ctx: Context, plan: BatchPlan) -> Batch:
    n = len(plan.sample_ids)
    return Batch(
        input_ids=torch.zeros(n, 3, dtype=torch.long),
        attention_mask=torch.ones(n, 3, dtype=torch.long),
        labels=torch.zeros(n, 3, dtype=torch.long),
        sample_ids=torch.tensor(plan.sample_ids, dtype=torch.long),
        task_ids=torch.tensor([ctx.store.task_of[i] for i in plan.sample_ids]),
        is_replay=torch.tensor(plan.is_replay, dtype=torch.bool),
    )


def task_plan(ctx: Context, step: int, batch_size: int) -> BatchPlan:
    pool = ctx.task_samples[ctx.task_index]
    ids = [pool[(step * batch_size + r) % len(pool)] for r in range(batch_size)]
    return BatchPlan(ids, [False] * batch_size)


def default_loss(ctx: Context, plan: BatchPlan) -> list[float]:
    return [1.0 + 0.01 * (i % 7) for i in plan.sample_ids]


def run_steps(
    plugin: ReplayPlugin,
    ctx: Context,
    steps: range,
    batch_size: int = 8,
    loss_fn: Any = default_loss,
    accum: int = 1,
) -> list[BatchPlan]:
    """What the loop does per optimizer step (compose, forward, step, after_step)."""
    plans = []
    for s in steps:
        assert ctx.task_step == s
        micro = []
        for a in range(accum):
            plan = plugin.compose_batch(ctx, task_plan(ctx, s * accum + a, batch_size))
            assert len(plan.sample_ids) == batch_size
            micro.append(plan)
            plans.append(plan)
        ctx.task_step += 1
        ctx.global_step += 1
        for plan in micro:
            plugin.after_step(ctx, batch_of(ctx, plan), outputs_for(loss_fn(ctx, plan)))
    return plans


def start_task(plugin: ReplayPlugin, ctx: Context, t: int, steps: int) -> None:
    ctx.task_index, ctx.task_step, ctx.steps_in_task = t, 0, steps
    plugin.on_task_start(ctx, ctx.stream.tasks[t])


def run_task(plugin: ReplayPlugin, ctx: Context, t: int, steps: int, **kw: Any) -> list:
    start_task(plugin, ctx, t, steps)
    plans = run_steps(plugin, ctx, range(steps), **kw)
    plugin.on_task_end(ctx, ctx.stream.tasks[t])
    return plans


def replay_steps(plans: list[BatchPlan]) -> list[int]:
    return [i for i, p in enumerate(plans) if any(p.is_replay)]


def test_build_replay_plugin():
    assert build_replay_plugin(make_config("none"), "none") is None
    expected = {
        "fixed": (FixedSchedule, False, False),
        "loss_triggered": (LossTrigger, False, False),
        "accuracy_triggered": (AccuracyTrigger, False, False),
        "mssr_spl": (FixedSchedule, True, True),
        "mssr_sch": (ExpandingSchedule, False, True),
        "mssr": (ExpandingSchedule, True, True),
    }
    for method, (trigger, memory, adaptive) in expected.items():
        plugin = build_replay_plugin(make_config(method), method)
        assert isinstance(plugin, ReplayPlugin) and plugin.name == method
        assert isinstance(plugin.trigger, trigger)
        assert (plugin.memory is not None) == memory
        assert plugin.adaptive_lam == adaptive
    with pytest.raises(ValueError, match="not a replay method"):
        build_replay_plugin(make_config("none"), "gere")


def test_no_replay_in_the_first_task():
    config = make_config("fixed", interval_units=0)
    plugin = build_replay_plugin(config, "fixed")
    ctx, events = make_ctx(config)
    plans = run_task(plugin, ctx, 0, 20)
    assert replay_steps(plans) == [] and events == []
    assert sum(sum(p.is_replay) for p in plans) == 0
    assert plugin.buffer.quotas() == {0: POOL}


def test_compose_replaces_exactly_round_lambda_b_rows():
    # 40 steps per task -> unit = round(0.05 * 40) = 2 steps; events at units 3, 6, … -> steps
    # 6-7, 12-13, 18-19, 24-25, 30-31, 36-37. λ = 0.3, B = 8 -> round(2.4) = 2 rows.
    config = make_config("fixed", buffer_size=16)
    plugin = build_replay_plugin(config, "fixed")
    ctx, events = make_ctx(config)
    run_task(plugin, ctx, 0, 40)
    plans = run_task(plugin, ctx, 1, 40)
    assert replay_steps(plans) == [6, 7, 12, 13, 18, 19, 24, 25, 30, 31, 36, 37]
    for s, plan in enumerate(plans):
        task_rows = task_plan(ctx, s, 8).sample_ids
        if s in replay_steps(plans):
            assert plan.is_replay == [False] * 6 + [True] * 2
            assert plan.sample_ids[:6] == task_rows[:6]
            assert all(ctx.store.task_of[i] == 0 for i in plan.sample_ids[6:])
        else:
            assert plan.sample_ids == task_rows and not any(plan.is_replay)
    assert sum(sum(p.is_replay) for p in plans) == 12 * 2
    # one logged event per window, with the agreed fields
    assert [e["task_step"] for e in events] == [6, 12, 18, 24, 30, 36]
    first = events[0]
    assert first["type"] == "replay_event" and first["task"] == 1 and first["method"] == "fixed"
    assert first["step"] == 46 and first["lam"] == 0.3 and first["units"] == 1.0
    # B = 16 -> round(4.8) = 5 rows
    plan = plugin.compose_batch(ctx, BatchPlan(list(range(16)), [False] * 16))
    assert plan.is_replay == [False] * 16  # task over: no event at task_step 40
    ctx.task_step = 6
    plugin.event = None
    plan = plugin.compose_batch(ctx, BatchPlan(list(range(16)), [False] * 16))
    assert sum(plan.is_replay) == 5 and plan.is_replay[-5:] == [True] * 5


def test_draws_without_replacement_within_an_event():
    # every step of task 1 is one event: 10 steps * 2 rows = 20 distinct of 20 buffer samples
    config = make_config("fixed", interval_units=0, buffer_size=20)
    plugin = build_replay_plugin(config, "fixed")
    ctx, events = make_ctx(config)
    run_task(plugin, ctx, 0, 10)
    plans = run_task(plugin, ctx, 1, 10)
    replayed = [i for p in plans for i, r in zip(p.sample_ids, p.is_replay, strict=True) if r]
    assert len(replayed) == 20 and len(set(replayed)) == 20
    assert len(events) == 1 and events[0]["units"] == 10 / 1


def test_buffer_quotas_after_tasks():
    config = make_config("fixed", buffer_size=20)
    plugin = build_replay_plugin(config, "fixed")
    ctx, _ = make_ctx(config)
    for t in range(3):
        run_task(plugin, ctx, t, 4)
    assert plugin.buffer.quotas() == {0: 7, 1: 7, 2: 6}
    # every replay method of a run holds the same buffer (the fill depends on the seed only)
    other = build_replay_plugin(config, "mssr")
    ctx2, _ = make_ctx(config)
    for t in range(3):
        run_task(other, ctx2, t, 4)
    assert np.array_equal(plugin.buffer.ids, other.buffer.ids)


def test_mssr_lambda_and_expanding_schedule():
    # 200 steps, unit 10: events at steps 10, 25, 46, 77, 120, 180 (see test_replay_schedule)
    config = make_config("mssr_sch")
    plugin = build_replay_plugin(config, "mssr_sch")
    ctx, events = make_ctx(config, n_tasks=2)
    run_task(plugin, ctx, 0, 200)
    run_task(plugin, ctx, 1, 200)
    assert [e["task_step"] for e in events] == [10, 25, 46, 77, 120, 180]
    # λ at the event's first global step t: 0.05 + 0.25 e^(−1e−5 t); t = 210 -> 0.2994758
    assert events[0]["step"] == 210
    assert events[0]["lam"] == pytest.approx(0.05 + 0.25 * np.exp(-1e-5 * 210))
    assert events[0]["lam"] == pytest.approx(0.2994758)


def test_mssr_memory_updates_from_step_losses():
    config = make_config("mssr", buffer_size=10)
    plugin = build_replay_plugin(config, "mssr")
    mem = plugin.memory
    ctx, _ = make_ctx(config, n_tasks=2)
    start_task(plugin, ctx, 0, 20)  # unit = 1 step
    own = ctx.task_samples[0]
    assert mem.tracked[own].all() and not mem.started[own].any()
    run_steps(plugin, ctx, range(1))
    # the first batch (ids 0..7) started at t = 1 unit with ℓ̃ = their loss
    assert mem.started[own[:8]].all() and not mem.started[own[8:]].any()
    assert mem.t_star[own[0]] == 1.0 and mem.loss[own[1]] == pytest.approx(1.01)
    run_steps(plugin, ctx, range(1, 20))
    plugin.on_task_end(ctx, ctx.stream.tasks[0])
    # only the 10 buffer samples of task 0 stay tracked, and all of them have a state
    kept = plugin.buffer.ids
    assert mem.tracked.sum() == 10 and mem.tracked[kept].all() and mem.started[kept].all()
    # decayed up to the task end (t = 20 units), except rows of the last step (seen at t = 20)
    seen_last = mem.t_star[kept] == 20.0
    assert seen_last.any() and (mem.m[kept][seen_last] == 1.0).all()
    assert (mem.m[kept][mem.t_star[kept] < 20.0] < 1.0).all()
    assert mem.last_refresh == 20.0


def test_memory_sampler_prefers_weak_memories():
    config = make_config("mssr_spl", buffer_size=10, interval_units=0)
    plugin = build_replay_plugin(config, "mssr_spl")
    ctx, _ = make_ctx(config, n_tasks=2)
    run_task(plugin, ctx, 0, 5)
    start_task(plugin, ctx, 1, 5)
    ids = plugin.buffer.ids
    weak = ids[:2]
    plugin.memory.m[ids] = 1.0
    plugin.memory.m[weak] = 1e-9  # p ∝ 1/m: these two carry ~all the probability mass
    plugin.memory.t_m[ids] = plugin.now_units(ctx)  # nothing to decay at the event start
    plugin.memory.last_refresh = plugin.now_units(ctx)
    plan = plugin.compose_batch(ctx, task_plan(ctx, 0, 8))
    assert sorted(plan.sample_ids[-2:]) == sorted(weak.tolist())
    # after the step both were reviewed: m = 1 again and t* = now
    ctx.task_step, ctx.global_step = 1, ctx.global_step + 1
    plugin.after_step(ctx, batch_of(ctx, plan), outputs_for([1.0] * 8))
    assert (plugin.memory.m[weak] == 1.0).all()
    assert (plugin.memory.t_star[weak] == plugin.now_units(ctx)).all()
    assert (plugin.memory.s[weak] > 1.0).all()  # m_before ≈ 0: a full-strength review


def json_safe(value: Any) -> bool:
    """State values must be tensors, arrays or plain JSON (no pickles)."""
    if isinstance(value, torch.Tensor | np.ndarray):
        return True
    if isinstance(value, dict):
        return all(isinstance(k, str) and json_safe(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(json_safe(v) for v in value)
    return value is None or isinstance(value, bool | int | float | str)


@pytest.mark.parametrize("method", ["fixed", "loss_triggered", "mssr_spl", "mssr"])
def test_state_round_trip_resumes_identically(method):
    config = make_config(method, buffer_size=12, interval_units=1)

    def fresh() -> tuple[ReplayPlugin, Context]:
        plugin = build_replay_plugin(config, method)
        ctx, _ = make_ctx(config)
        return plugin, ctx

    def spiky(c: Context, plan: BatchPlan) -> list[float]:
        return [1.0 + (2.0 if c.task_step % 7 == 0 else 0.0) + 0.01 * i for i in plan.sample_ids]

    a, ctx_a = fresh()
    run_task(a, ctx_a, 0, 30, loss_fn=spiky)
    run_task(a, ctx_a, 1, 30, loss_fn=spiky)
    start_task(a, ctx_a, 2, 30)
    run_steps(a, ctx_a, range(13), loss_fn=spiky)
    state = a.state_dict()
    assert json_safe(state)
    json.dumps(state, default=lambda v: None)  # the non-array part is plain JSON
    state = copy.deepcopy(state)

    b, ctx_b = fresh()
    # the loop's order on resume: on_task_start with a fresh plugin, then the restored state
    ctx_b.task_index, ctx_b.task_step, ctx_b.steps_in_task = 2, 0, 30
    ctx_b.global_step = ctx_a.global_step
    b.on_task_start(ctx_b, ctx_b.stream.tasks[2])
    b.load_state_dict(state)
    ctx_b.task_step = 13
    rest_a = run_steps(a, ctx_a, range(13, 30), loss_fn=spiky)
    rest_b = run_steps(b, ctx_b, range(13, 30), loss_fn=spiky)
    assert [p.sample_ids for p in rest_a] == [p.sample_ids for p in rest_b]
    assert [p.is_replay for p in rest_a] == [p.is_replay for p in rest_b]
    assert any(any(p.is_replay) for p in rest_a)
    a.on_task_end(ctx_a, ctx_a.stream.tasks[2])
    b.on_task_end(ctx_b, ctx_b.stream.tasks[2])
    assert np.array_equal(a.buffer.ids, b.buffer.ids)
    if a.memory is not None:
        assert np.array_equal(a.memory.m, b.memory.m)
        assert np.array_equal(a.memory.s, b.memory.s)


def test_state_survives_the_checkpoint_format(tmp_path):
    from retain.train import checkpoint

    config = make_config("mssr", buffer_size=12)
    plugin = build_replay_plugin(config, "mssr")
    ctx, _ = make_ctx(config)
    run_task(plugin, ctx, 0, 20)
    start_task(plugin, ctx, 1, 20)
    run_steps(plugin, ctx, range(3))
    checkpoint.save_checkpoint(tmp_path / "ck", {"replay": plugin.state_dict()})
    loaded = checkpoint.load_checkpoint(tmp_path / "ck")["replay"]
    other = build_replay_plugin(config, "mssr")
    other.load_state_dict(loaded)
    assert np.array_equal(other.memory.m, plugin.memory.m)
    assert other.rng.bit_generator.state == plugin.rng.bit_generator.state
    assert other.buffer.rng.bit_generator.state == plugin.buffer.rng.bit_generator.state
    with pytest.raises(ValueError, match="cannot resume"):
        build_replay_plugin(make_config("fixed"), "fixed").load_state_dict(loaded)
