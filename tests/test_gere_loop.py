"""GeRe inside the loop: targets equal to the first step, per-row loss accounting, mixing modes,
teachers, composition with MSSR and the general-ability suite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from retain.config import ConfigError, load_config
from retain.data.encoding import Batch, BatchPlan, SampleStore
from retain.methods.base import Plugin
from retain.methods.gere.plugin import GeneralReplayPlugin
from retain.train.batches import StepPlan
from retain.train.loop import ContinualTrainer, run
from retain.train.step import LossScales, group_losses

TINY = [
    "model.name_or_path=tiny-random", "eval.figures=false",
    "model.lora.target_modules=[q_proj,v_proj]",
    "data.stream=builtin", "data.max_train_per_task=16", "data.max_test_per_task=4",
    "data.max_length=128", "data.valid_per_task=0", "train.steps_per_task=3",
    "train.batch_size=4", "train.lr=5e-3", "train.progress=false", "eval.batch_size=8",
]


def general_source(folder: Path, rows: int = 12) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "general.jsonl"
    text = [f"Page {i}: the river runs past {'old ' * (i % 5)}mills to the harbour town."
            for i in range(rows)]
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in text))
    return path


def gere_config(tmp_path: Path, *extra: str):
    return load_config(None, [*TINY, f"output_dir={tmp_path}",
                              f"general.source={general_source(tmp_path)}", "general.size=8",
                              "general.max_tokens=48", "general.mixing=concat", *extra])


def events(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_tm_is_exactly_zero_at_the_first_step(tmp_path: Path, finetune: str) -> None:
    """Targets come from the training forward's code path: before the first update the model's
    final hidden states are on the base side of every threshold."""
    result = run(gere_config(tmp_path, "name=first", "methods=[gere]", "data.num_tasks=1",
                             f"model.finetune={finetune}", "general.mixing=per_batch",
                             "general.per_batch_rows=2", "general.weight=dy"))
    first = events(result.run_dir, "general_replay_first_step")
    assert len(first) == 1 and first[0]["step"] == 1 and first[0]["loss"] == "tm"
    assert first[0]["value"] == 0.0 and first[0]["violations"] == 0
    later = events(result.run_dir, "general_replay")
    assert later and all(r["violations"] > 0 for r in later)  # the model moved
    for r in later:  # dy: w · L_TM equals the replay rows' CE
        assert r["w"] * r["value"] == pytest.approx(r["ce_general"], rel=1e-5)
    targets = events(result.run_dir, "general_replay_targets")[0]
    assert targets["cache_bytes"] * 16 < targets["fp32_bytes"]
    # tm needs no forward per step, only the base pass: 8 rows in batches of 4
    assert result.metrics["cost"]["extra_forward_passes"] == 2


def _step(rows: list[tuple[int, int]], micro: int) -> tuple[SampleStore, StepPlan, list[Batch]]:
    """A step over rows (task, loss tokens), cut into micro-batches of `micro` rows."""
    store = SampleStore()
    ids = [store.add([1] * (n + 1), [-100] + [2] * n, t) for t, n in rows]
    plans = [BatchPlan(ids[i : i + micro], [False] * micro) for i in range(0, len(ids), micro)]
    general = [i for i in ids if store.task_of[i] < 0]
    plan = StepPlan(
        plans=plans,
        loss_tokens=sum(store.loss_tokens[i] for i in ids if store.task_of[i] >= 0),
        tokens=0,
        samples=len(ids),
        replayed=0,
        general_rows=len(general),
        general_tokens=sum(store.loss_tokens[i] for i in general),
    )
    batches = []
    for p in plans:
        task_ids = torch.tensor([store.task_of[i] for i in p.sample_ids])
        empty = torch.zeros(len(p.sample_ids), 1)
        batches.append(Batch(empty, empty, empty, torch.tensor(p.sample_ids), task_ids,
                             torch.zeros(len(p.sample_ids), dtype=torch.bool)))
    return store, plan, batches


class _RowLoss(Plugin):
    loss_weighting = "general_rows"


def test_step_loss_follows_the_per_row_semantics() -> None:
    """Rows (task, tokens): a 3-token answer, a 40-token general row, 2- and 5-token answers.
    Loss = 3/4 · (task NLL / 10 tokens) + 1/4 · (general NLL / 40 tokens) + 1/4 · w·L_aux."""
    store, plan, batches = _step([(0, 3), (-1, 40), (0, 2), (0, 5)], micro=2)
    nll = [torch.tensor([6.0, 80.0]), torch.tensor([4.0, 15.0])]  # summed NLL per row
    scales = LossScales.of(plan, world=1)
    parts = [group_losses(n, b, scales) for n, b in zip(nll, batches, strict=True)]
    task = sum(float(p["task"]) for p in parts)
    general = sum(float(p["general_lm"]) for p in parts)
    assert task == pytest.approx(0.75 * (6 + 4 + 15) / 10)
    assert general == pytest.approx(0.25 * 80 / 40)
    aux = torch.tensor(3.0)
    weighted = [float(scales.weigh(_RowLoss(None), b, aux)) for b in batches]  # type: ignore
    assert weighted == [pytest.approx(0.75), 0.0]  # the general row's share, once


def test_a_step_without_general_rows_is_computed_as_before() -> None:
    store, plan, batches = _step([(0, 3), (1, 4), (0, 2), (0, 5)], micro=2)
    scales = LossScales.of(plan, world=2)
    assert scales.task == 2 / 14 and scales.general == 0.0
    nll = torch.tensor([1.5, 2.5])
    parts = group_losses(nll, batches[0], scales)
    assert list(parts) == ["task"]
    assert torch.equal(parts["task"], nll.sum() * (2 / 14))
    assert float(scales.weigh(Plugin(None), batches[0], torch.tensor(3.0))) == 1.5  # type: ignore


def _one_step(tmp_path: Path, name: str, batch: int, accum: int) -> tuple[dict, list]:
    cfg = gere_config(tmp_path, f"name={name}", "methods=[gere_lm]", "train.steps_per_task=1",
                      "train.warmup_ratio=0.0", "train.lr=0.05", "train.mixed_precision='no'",
                      "model.lora.dropout=0.0", "data.num_tasks=1", "general.size=4",
                      f"train.batch_size={batch}", f"train.grad_accum={accum}", "seed=3")
    trainer = ContinualTrainer(cfg)
    trainer.parts.plugins[0].on_stream_start(trainer.parts.ctx)
    trainer.train_task(0, 0, None)
    model = trainer.parts.inner_model()
    weights = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    step = events(trainer.parts.run_dir, "step")[0]
    return weights, [step["general"], step["losses"]]


def test_accumulation_with_general_rows_equals_one_big_batch(tmp_path: Path) -> None:
    whole, (general, losses) = _one_step(tmp_path, "whole", 4, 1)
    accum, (general2, losses2) = _one_step(tmp_path, "accum", 2, 2)
    assert general == general2 >= 1 and set(losses) == {"task", "general_lm"}
    for key in losses:
        assert losses[key] == pytest.approx(losses2[key], rel=1e-6)
    for key in whole:
        torch.testing.assert_close(whole[key], accum[key], atol=1e-6, rtol=0)


def test_per_batch_puts_exactly_k_rows_in_every_global_batch(tmp_path: Path) -> None:
    """B = 2 rows × 2 micro-batches, k = 1: 3 task rows per step; one epoch of 16 task rows is
    ceil(16 / 3) = 6 steps; MSSR's replay (named first) never displaces a general row."""
    result = run(gere_config(tmp_path, "name=pb", "methods=[mssr,gere]", "data.num_tasks=2",
                             "train.steps_per_task=null", "train.epochs_per_task=1",
                             "train.batch_size=2", "train.grad_accum=2", "general.loss=lm",
                             "general.mixing=per_batch", "general.per_batch_rows=1",
                             "mssr.first_interval_units=0.5", "replay.event_units=20"))
    steps = events(result.run_dir, "step")
    assert [r["task_step"] for r in steps] == [1, 2, 3, 4, 5, 6] * 2
    assert all(r["samples"] == 4 and r["general"] == 1 for r in steps)
    assert sum(r["replayed"] for r in steps if r["task"] == 1) > 0


def test_per_batch_needs_room_for_task_rows(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="general.per_batch_rows=4 must be below"):
        GeneralReplayPlugin(gere_config(tmp_path, "general.mixing=per_batch",
                                        "general.per_batch_rows=4"), "gere")


def test_concat_grows_the_pool_and_epochs_count_it(tmp_path: Path) -> None:
    """16 task rows + 8 general rows, one epoch in batches of 4: 6 steps, each row once."""
    result = run(gere_config(tmp_path, "name=cc", "methods=[gere]", "data.num_tasks=1",
                             "train.steps_per_task=null", "train.epochs_per_task=1"))
    steps = events(result.run_dir, "step")
    assert len(steps) == 6 and sum(r.get("general", 0) for r in steps) == 8
    cost = result.metrics["cost"]
    assert cost["train_samples"] == 24 and cost["counters"]["general_rows"] == 8


def test_mssr_and_gere_in_one_run_keep_general_rows_out_of_the_buffer(tmp_path: Path) -> None:
    cfg = gere_config(tmp_path, "name=both", "methods=[mssr,gere]", "data.num_tasks=3",
                      "mssr.first_interval_units=0.5", "replay.event_units=20",
                      "replay.buffer_size=12")
    trainer = ContinualTrainer(cfg)
    result = trainer.run()
    mssr, gere = trainer.parts.plugins
    general = set(range(gere.store_first, len(trainer.parts.store)))
    assert len(general) == 8 and all(trainer.parts.store.task_of[i] == -1 for i in general)
    assert len(mssr.buffer) > 0 and not general & set(int(i) for i in mssr.buffer.ids)
    assert not mssr.memory.tracked[sorted(general)].any()
    steps = events(result.run_dir, "step")
    assert sum(r["replayed"] for r in steps) > 0 and sum(r.get("general", 0) for r in steps) > 0
    assert all("general_tm" in r["losses"] for r in steps if r.get("general"))


def test_lora_teacher_is_the_model_with_its_adapter_disabled(tmp_path: Path) -> None:
    result = run(gere_config(tmp_path, "name=kl", "methods=[gere_kl]", "data.num_tasks=1",
                             "general.mixing=per_batch", "general.per_batch_rows=1"))
    first = events(result.run_dir, "general_replay_first_step")[0]
    assert first["loss"] == "kl" and first["value"] == pytest.approx(0.0, abs=1e-6)
    later = events(result.run_dir, "general_replay")
    assert later[-1]["value"] > 1e-6  # the adapter moved the model away from its base
    assert result.metrics["cost"]["extra_forward_passes"] == 3  # one per step with replay rows
    assert not list(result.run_dir.glob("**/gere_teacher*"))  # nothing stored


@pytest.mark.parametrize("loss", ["l2", "kl"])
def test_full_finetuning_teacher_is_a_logged_cache(tmp_path: Path, loss: str) -> None:
    result = run(gere_config(tmp_path, f"name=full{loss}", f"methods=[gere_{loss}]",
                             "model.finetune=full", "data.num_tasks=1", "general.teacher_topk=8",
                             "general.mixing=per_batch", "general.per_batch_rows=1"))
    cache = events(result.run_dir, "general_replay_teacher_cache")[0]
    tokens = events(result.run_dir, "general_replay_set")[0]["tokens"]
    per_token = 64 * 2 if loss == "l2" else 8 * (4 + 4)  # fp16 hidden; fp32 log-prob + int32 id
    assert cache["bytes"] == tokens * per_token
    assert Path(cache["file"]).is_file() and Path(cache["file"]).parent.name == "work"
    first = events(result.run_dir, "general_replay_first_step")[0]
    assert first["value"] == pytest.approx(0.0, abs=1e-4)  # fp16 rounding of the cache only
    assert result.metrics["cost"]["extra_forward_passes"] == 2  # the base pass that filled it


DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.mark.skipif(not DATA.is_dir(), reason=f"shared benchmark data not found at {DATA}")
def test_general_suite_with_a_replay_source_that_overlaps_it(tmp_path: Path) -> None:
    """Replaying WikiText-2 test itself: its held-out paragraphs are dropped from the replay
    set, and general_delta / f1_general_ap come with bootstrap intervals."""
    wiki = DATA / "general_text" / "wikitext2_raw" / "wiki.test.raw"
    cfg = gere_config(tmp_path, "name=suite", "methods=[gere]", "data.num_tasks=2",
                      f"data.data_dir={DATA}", f"general.source={wiki}", "general.size=12",
                      "eval.general.enabled=true", "eval.general.mmlu_per_subject=1",
                      "eval.general.mmlu_subjects=[anatomy,astronomy]", "eval.general.arc_easy=6",
                      "eval.general.wikitext_paragraphs=4")
    result = run(cfg)
    replay = events(result.run_dir, "general_replay_set")[0]
    assert replay["dropped_overlap"] == 4 and replay["rows"] == 12
    ci = result.metrics["ci"]
    for key in ("general_delta", "f1_general_ap", "general_delta:wikitext_ppl"):
        assert ci[key]["low"] <= ci[key]["value"] <= ci[key]["high"], key
    assert np.isfinite(result.metrics["general_delta"])


def test_replay_rows_longer_than_the_model_are_refused(tmp_path: Path) -> None:
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"text": "word " * 1000}) + "\n")  # 5000 byte tokens
    cfg = load_config(None, [*TINY, f"output_dir={tmp_path}", "name=long", "methods=[gere]",
                             f"general.source={long}", "general.max_tokens=5000"])
    trainer = ContinualTrainer(cfg)
    with pytest.raises(ConfigError, match="do not fit the model's 4096 positions"):
        trainer.parts.plugins[0].on_stream_start(trainer.parts.ctx)
