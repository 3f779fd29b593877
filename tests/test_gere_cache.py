"""The compact state cache: contents, size, memory mapping, and the round trip through a
checkpoint together with the replay set and the thresholds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from retain.config import load_config
from retain.methods.gere.plugin import GeneralReplayPlugin
from retain.methods.gere.targets import (
    ActivationBuffer,
    StateCache,
    classify,
    packed_width,
    thresholds,
)
from retain.train.checkpoint import read_checkpoint, save_checkpoint
from retain.train.loop import ContinualTrainer

TINY = [
    "model.name_or_path=tiny-random", "eval.figures=false",
    "data.stream=builtin", "data.max_train_per_task=8",
    "data.max_test_per_task=2", "data.max_length=128", "data.valid_per_task=0",
    "data.num_tasks=2", "train.steps_per_task=2", "train.batch_size=4", "train.progress=false",
]


def _source(tmp_path: Path, rows: int = 12) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "general.jsonl"
    text = [f"Document {i} tells of rivers, towns and {'many ' * i}people." for i in range(rows)]
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in text))
    return path


def _trainer(tmp_path: Path, *extra: str) -> ContinualTrainer:
    cfg = load_config(None, [*TINY, f"output_dir={tmp_path}", "name=cache", "methods=[gere]",
                             f"general.source={_source(tmp_path)}", "general.size=10",
                             "general.max_tokens=40", "general.mixing=concat", *extra])
    return ContinualTrainer(cfg)


def test_cache_holds_the_state_of_every_token_row_by_row() -> None:
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(57, 13, generator=g)
    offsets = np.array([0, 20, 21, 57])
    tau_pos, tau_neg = thresholds(acts.double().mean(0), acts.double().std(0, unbiased=False))
    cache = StateCache.build(acts.numpy(), offsets, tau_pos, tau_neg, chunk=16)
    assert cache.nbytes == 57 * packed_width(13) == 57 * 3
    full = classify(acts, tau_pos, tau_neg)
    got = cache.states([2, 0], torch.device("cpu"))
    torch.testing.assert_close(got, torch.cat([full[21:57], full[0:20]]), rtol=0, atol=0)


def test_activation_buffer_spills_to_a_file_with_the_same_values() -> None:
    rows = torch.randn(30, 8)
    small, big = ActivationBuffer(30, 8, max_bytes=64), ActivationBuffer(30, 8)
    assert isinstance(small.values, np.memmap) and not isinstance(big.values, np.memmap)
    for buffer in (small, big):
        buffer.add(rows[:10])
        buffer.add(rows[10:])
    np.testing.assert_array_equal(np.asarray(small.values), big.values)
    small.close()


def test_plugin_state_round_trips_through_a_checkpoint(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path)
    plugin = trainer.parts.plugins[0]
    assert isinstance(plugin, GeneralReplayPlugin)
    tasks_rows = len(trainer.parts.store)
    plugin.on_stream_start(trainer.parts.ctx)
    assert plugin.store_first == tasks_rows and len(trainer.parts.store) == tasks_rows + 10
    assert all(trainer.parts.store.task_of[i] == -1 for i in range(tasks_rows, tasks_rows + 10))
    save_checkpoint(tmp_path / "ck", {"plugin": plugin.state_dict()})
    state = read_checkpoint(tmp_path / "ck")["plugin"]

    fresh = GeneralReplayPlugin(trainer.parts.config, "gere")
    fresh.load_state_dict(state)
    assert fresh.replay is not None and plugin.replay is not None and plugin.cache is not None
    assert fresh.replay.rows == plugin.replay.rows and fresh.store_first == plugin.store_first
    for key in ("mean", "std", "tau_pos", "tau_neg"):
        assert fresh.moments[key].dtype == plugin.moments[key].dtype
        torch.testing.assert_close(fresh.moments[key], plugin.moments[key], rtol=0, atol=0)
    assert fresh.moments["mean"].dtype == torch.float64
    assert fresh.cache is not None
    np.testing.assert_array_equal(fresh.cache.packed, plugin.cache.packed)
    np.testing.assert_array_equal(fresh.cache.offsets, plugin.cache.offsets)

    # a resumed process has a new store: the rows come back at the same ids
    resumed = _trainer(tmp_path / "again")
    assert len(resumed.parts.store) == tasks_rows
    pool = fresh.task_data(resumed.parts.ctx, 0, resumed.parts.ctx.task_samples[0])
    assert pool[-10:] == list(range(tasks_rows, tasks_rows + 10))
    assert resumed.parts.store.input_ids[tasks_rows:] == plugin.replay.rows
    assert resumed.parts.store.labels[tasks_rows:] == plugin.replay.rows


def test_memory_mapped_cache_reads_the_same_states(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, "general.cache=mmap")
    plugin = trainer.parts.plugins[0]
    plugin.on_stream_start(trainer.parts.ctx)
    assert plugin.cache is not None and isinstance(plugin.cache.packed, np.memmap)
    files = list(tmp_path.glob("cache/work/gere_states.rank*.u8"))
    assert len(files) == 1 and files[0].stat().st_size == plugin.cache.nbytes
    in_memory = _trainer(tmp_path / "mem").parts.plugins[0]
    in_memory.on_stream_start(_trainer(tmp_path / "mem2").parts.ctx)
    assert in_memory.cache is not None
    np.testing.assert_array_equal(np.asarray(plugin.cache.packed), in_memory.cache.packed)
    rows = [3, 0, 7]
    torch.testing.assert_close(plugin.cache.states(rows, torch.device("cpu")),
                               in_memory.cache.states(rows, torch.device("cpu")), rtol=0, atol=0)
    save_checkpoint(tmp_path / "ck", {"plugin": plugin.state_dict()})
    fresh = GeneralReplayPlugin(trainer.parts.config, "gere")
    fresh.load_state_dict(read_checkpoint(tmp_path / "ck")["plugin"])
    assert fresh.cache is not None and isinstance(fresh.cache.packed, np.memmap)
    np.testing.assert_array_equal(np.asarray(fresh.cache.packed), in_memory.cache.packed)
