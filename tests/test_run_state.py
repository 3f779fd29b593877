"""The run-state record: `RunState.to_state` / `from_state` round trip through a checkpoint on
disk, checkpoints of the earlier layout, clear errors for malformed ones, and `train/` free of
import cycles (TYPE_CHECKING and function-level imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from retain.eval.matrix import ScoreMatrix
from retain.storage.examples import ExampleResults
from retain.train.checkpoint import read_checkpoint, save_checkpoint
from retain.train.state import Position, RunState, StateFormatError

TRAIN = Path(__file__).resolve().parents[1] / "src" / "retain" / "train"


def _state() -> RunState:
    matrix = ScoreMatrix(["a", "b"], ["wiki"], score_types={"a": "accuracy"},
                         decoding={"a": {"loglik_norm": "bytes"}}, cells="needed")
    matrix.set_row(0, {"a": 0.25, "b": 0.5}, {"wiki": 12.5})
    matrix.set_row(1, {"a": 0.75}, {})
    examples = ExampleResults()
    rng = np.random.default_rng(3)
    examples.set(0, "a", rng.random(5), extra={"valid": rng.random(5)}, ids=list("vwxyz"))
    examples.set(1, "a", rng.random(5), extra={"valid": rng.random(5)}, ids=list("vwxyz"))
    examples.set_perplexity(0, "wiki", rng.random(3) * 10, np.array([4, 5, 6]))
    return RunState(
        matrix=matrix,
        examples=examples,
        ties={"a": {"0": 2, "1": 1}},
        counters={"samples": 64.0, "replayed_rows": 7.0},
        global_step=17,
        position=Position(1, 3, "train"),
        fingerprint={"version": 2, "digest": "abc", "parts": {"model": "tiny"}},
        log_offset=4096,
    )


def _same(a: RunState, b: RunState) -> None:
    assert a.matrix == b.matrix and a.matrix.cells == b.matrix.cells
    da, db = a.examples.to_dict(), b.examples.to_dict()
    assert da.keys() == db.keys()
    for key in da:
        np.testing.assert_array_equal(np.asarray(da[key]), np.asarray(db[key]), err_msg=key)
    assert (a.ties, a.counters, a.global_step) == (b.ties, b.counters, b.global_step)
    assert (a.position, a.fingerprint, a.log_offset) == (b.position, b.fingerprint, b.log_offset)


def test_the_run_state_survives_a_checkpoint_round_trip(tmp_path: Path) -> None:
    state = _state()
    save_checkpoint(tmp_path / "ck", {**state.to_state(), "rng": [{}]})
    back = RunState.from_state(read_checkpoint(tmp_path / "ck"))
    _same(state, back)
    back.counters["samples"] += 1  # the restored record owns its containers
    back.ties["a"]["0"] = 9
    assert state.counters["samples"] == 64.0 and state.ties["a"]["0"] == 2


def test_a_checkpoint_of_the_earlier_layout_still_loads() -> None:
    """Written before ties were recorded: no `ties`; the rest as the trainer wrote it."""
    old = _state().to_state()
    del old["ties"]
    back = RunState.from_state(old)
    assert back.ties == {} and back.global_step == 17 and back.position == Position(1, 3, "train")


@pytest.mark.parametrize("key", ["matrix", "examples", "position", "counters", "log_offset"])
def test_a_missing_field_is_named(key: str) -> None:
    state = _state().to_state()
    del state[key]
    with pytest.raises(StateFormatError, match=repr(key)):
        RunState.from_state(state)


def test_a_malformed_field_is_named() -> None:
    state = _state().to_state()
    state["position"] = {"task": 0, "step": 0, "phase": "halfway"}
    with pytest.raises(StateFormatError, match="phase"):
        RunState.from_state(state)
    state = _state().to_state()
    state["matrix"]["R"] = [[0.5]]
    with pytest.raises(StateFormatError, match="matrix"):
        RunState.from_state(state)


def test_the_position_says_where_training_continues() -> None:
    assert Position().first_task() == 0  # after row 0
    assert Position(1, 0, "done").first_task() == 2
    mid = Position(1, 3, "train")
    assert mid.first_task() == 1 and mid.start_step(1) == 3 and mid.start_step(2) == 0


def test_the_plugin_context_sees_the_state_counters_and_step() -> None:
    from types import SimpleNamespace

    state = _state()
    ctx = SimpleNamespace(counters={}, global_step=0, task_step=2)
    state.share_with(ctx)  # type: ignore[arg-type]
    assert ctx.counters is state.counters and ctx.global_step == 17
    state.advance(ctx)  # type: ignore[arg-type]
    assert (state.global_step, ctx.global_step, ctx.task_step) == (18, 18, 3)


def _train_imports(path: Path) -> set[str]:
    """Every `retain.train.*` module `path` imports, wherever the import statement is."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "retain.train":
                found.update(f"retain.train.{a.name}" for a in node.names)
            elif node.module.startswith("retain.train."):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("retain.train."))
    return found


def test_train_has_no_import_cycle() -> None:
    graph = {f"retain.train.{p.stem}": _train_imports(p) for p in TRAIN.glob("*.py")}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = path[path.index(module):] + [module]
            raise AssertionError(f"import cycle in train/: {' -> '.join(cycle)}")
        if module in done:
            return
        for imported in sorted(graph.get(module, ())):
            visit(imported, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_a_checkpoint_without_a_field_is_refused_naming_it_and_the_fix(tmp_path: Path) -> None:
    """Through the trainer's own save and resume: the run state written is the one read back,
    and a checkpoint that lacks a field says which, and how to go on."""
    from retain.config import load_config
    from retain.train.loop import ContinualTrainer
    from retain.train.resume import CHECKPOINTS, ResumeError, load_resume_state

    cfg = load_config(None, ["model.name_or_path=tiny-random", "data.stream=builtin",
                             "data.num_tasks=2", "data.max_train_per_task=8",
                             "data.max_test_per_task=4", "data.valid_per_task=2",
                             "train.progress=false", f"output_dir={tmp_path}", "name=rs"])
    trainer = ContinualTrainer(cfg)
    try:
        trainer.state.counters["samples"] = 12.0
        trainer.state.global_step = 3
        trainer.state.matrix.set_row(0, {trainer.parts.stream.task_names[0]: 0.5})
        trainer.save(-1, 0, "done")
        restored = load_resume_state(trainer.parts)
        assert restored is not None
        run, checkpoint = restored
        assert run.global_step == 3 and run.matrix == trainer.state.matrix
        assert trainer.parts.ctx.counters is run.counters and run.counters["samples"] == 12.0
        latest = cfg.run_dir / CHECKPOINTS / "latest"
        del checkpoint["matrix"]
        save_checkpoint(latest, checkpoint)
        with pytest.raises(ResumeError, match=r"'matrix'.*--overwrite"):
            load_resume_state(trainer.parts)
    finally:
        trainer.close()
