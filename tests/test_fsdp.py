"""FSDP2 (`train.sharding=fsdp2`) on two CPU processes (gloo, torchrun), the very path GPU
users run: the shards themselves, LoRA and full fine-tuning equal to one process with the doubled
batch, a crashed sharded run resuming bit for bit, and identical plugin state on both ranks.

The two-process runs (eight, one of them crashed in-process and resumed in the same ranks) and
the shard check are scenarios of the suite's one torchrun launch (tests/torchrun_batch.py); the
one-process references run in this process.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.torchrun_batch import ENV, GENERAL, Batch, one, records, shards, two

pytestmark = pytest.mark.slow  # torchrun: two processes per run
SHORT = ("data.num_tasks=2", "train.steps_per_task=3")
FSDP = "train.sharding=fsdp2"
CRASHED = ("data.num_tasks=2", "train.steps_per_task=6", "train.checkpoint_every=2",
           "methods=[mssr]", FSDP)


def _finetune(kind: str) -> tuple[str, ...]:
    extra = (*SHORT, f"model.finetune={kind}", "train.warmup_ratio=0.0")
    return (*extra, "train.lr=1e-3") if kind == "full" else extra


def _plugin(method: str) -> tuple[str, ...]:
    if method == "gere":
        return (*SHORT, "methods=[mssr,gere]", "mssr.first_interval_units=0.5",
                f"general.source={{out}}/{GENERAL}", "general.size=8", "general.max_tokens=40",
                "general.mixing=per_batch", "general.per_batch_rows=1",
                "general.target_batch_size=2")
    return (*SHORT, f"methods=[{method}]")


SCENARIOS = [
    shards("fsdp_shards"),
    # 2 processes x 2 micro-batches x 2 rows: sharded gradients accumulate across micro-batches
    *(two(f"fsdp_{kind}", 2, *_finetune(kind), FSDP, "train.grad_accum=2")
      for kind in ("lora", "full")),
    two("fsdp_whole", 2, *CRASHED),
    # dies in task 2 as it is about to save step 4: steps 3-4 are logged, not checkpointed
    two("fsdp_crashed", 2, *CRASHED, crash=(1, 4)),
    *(two(f"fsdp_{method}_{how}", 2, *_plugin(method), *sharding)
      for method in ("gere", "procl") for how, sharding in (("ddp", ()), ("sharded", (FSDP,)))),
]


def _exported(run_dir: Path, task: int) -> dict[str, torch.Tensor]:
    folder = run_dir / "adapters" / f"task_{task}"
    name = "adapter_model.safetensors"
    return load_file(str(folder / (name if (folder / name).exists() else "model.safetensors")))


def _assert_same_exports(one: Path, two: Path, tasks: int, tol: float) -> None:
    for t in range(1, tasks + 1):
        a, b = _exported(one, t), _exported(two, t)
        assert a.keys() == b.keys() and a
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=tol, rtol=0)


def _assert_same_training(one: Path, two: Path, tol: float, tasks: int = 2) -> None:
    """The same rows, schedule and losses every step, and the same exported weights."""
    a, b = records(one, "step"), records(two, "step")
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        assert (x["samples"], x["tokens"], x["replayed"], x["lr"]) == (
            y["samples"], y["tokens"], y["replayed"], y["lr"])
        assert x["loss"] == (pytest.approx(y["loss"], abs=tol, rel=0) if tol else y["loss"])
    _assert_same_exports(one, two, tasks, tol)


def crashed_and_resumed(batch: Batch, name: str, at_step: int) -> Path:
    """Scenario `name`: a two-process sharded run that died in-process in task 2 as it was
    about to save step `at_step` (checked to have logged that step and not finished), then
    was resumed in the same ranks."""
    result = batch.result(name)
    assert result["crashed"] == f"crashed in task 1 at step {at_step}"
    assert result["crashed_at"] == at_step and result["resumed"]
    return batch.run_dir(name)


def test_every_parameter_is_a_shard_and_full_states_round_trip(torchrun_runs: Batch) -> None:
    """tests/fsdp_worker.py's `shards` on both ranks of the batched launch."""
    assert torchrun_runs.result("fsdp_shards", 0)["ok"]
    assert torchrun_runs.result("fsdp_shards", 1)["ok"]


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_sharded_training_equals_one_process_with_the_doubled_batch(
    tmp_path: Path, torchrun_runs: Batch, finetune: str
) -> None:
    reference = one(tmp_path, "one", 8, *_finetune(finetune))
    sharded = torchrun_runs.run_dir(f"fsdp_{finetune}")
    # the exported adapters (LoRA) or models (full) are the trainable weights, gathered
    _assert_same_training(reference, sharded, tol=1e-5)
    assert (reference / "scores.csv").read_text() == (sharded / "scores.csv").read_text()
    moved = _exported(sharded, 1)
    assert any(float(v.abs().max()) > 0 for k, v in moved.items() if "lora_B" in k) or (
        finetune == "full"
    )


def test_crashed_sharded_run_resumes_bit_identically(torchrun_runs: Batch) -> None:
    whole = torchrun_runs.run_dir("fsdp_whole")
    resumed = crashed_and_resumed(torchrun_runs, "fsdp_crashed", at_step=4)
    assert (whole / "scores.csv").read_text() == (resumed / "scores.csv").read_text()
    _assert_same_training(whole, resumed, tol=0.0)
    for run_dir in (whole, resumed):
        states = records(run_dir, "rank_state")
        assert len(states) == 2 and all(len(set(r["plugin_digests"])) == 1 for r in states)
        assert all(len(r["plugin_digests"]) == 2 for r in states)


@pytest.mark.parametrize("method", ["gere", "procl"])
def test_plugin_state_is_identical_on_both_sharded_ranks(
    torchrun_runs: Batch, method: str
) -> None:
    """GeRe (with MSSR: replay memory, general rows, targets from the sharded base pass) and
    ProCL (programs rewritten in place, kept replicated) against the replicated (DDP) run."""
    ddp = torchrun_runs.run_dir(f"fsdp_{method}_ddp")
    sharded = torchrun_runs.run_dir(f"fsdp_{method}_sharded")
    states = records(sharded, "rank_state")
    assert len(states) == 2 and all(len(set(r["plugin_digests"])) == 1 for r in states)
    assert all(len(r["plugin_digests"]) == 2 for r in states)
    assert (ddp / "scores.csv").read_text() == (sharded / "scores.csv").read_text()
    _assert_same_training(ddp, sharded, tol=1e-5)
    if method == "gere":
        assert all(r["general"] == 1 for r in records(sharded, "step"))


def test_sharding_is_refused_under_accelerates_own_fsdp() -> None:
    """Two shardings at once would wrap the model twice: the launcher's config is named."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from retain.train.fsdp import shard_model

    launched = SimpleNamespace(distributed_type=DistributedType.FSDP, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="configured accelerate for FSDP.*sharding=none"):
        shard_model(torch.nn.Linear(2, 2), launched)  # type: ignore[arg-type]


def test_gpu_throughput_benchmark_runs_sharded_on_one_cpu_process(tmp_path: Path) -> None:
    """benchmarks/gpu_throughput.py in its smoke mode, retain's side sharded with FSDP2 on a
    single rank (the path a one-GPU session runs): it must finish and report both sides."""
    script = Path(__file__).parents[1] / "benchmarks" / "gpu_throughput.py"
    out = tmp_path / "throughput.json"
    done = subprocess.run([sys.executable, str(script), "--smoke", "--sharding", "fsdp2",
                           "--json", str(out)], env=ENV, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["sharding"] == "fsdp2" and result["steps"] == 3
    assert result["retain_tokens_per_s"] > 0 and result["trainer_tokens_per_s"] > 0
    assert result["ratio"] == pytest.approx(  # one smoke round: its ratio is the median
        result["retain_tokens_per_s"] / result["trainer_tokens_per_s"])
    assert result["ratio_interval"] == [pytest.approx(result["ratio"])] * 2


def test_a_teacher_forward_on_one_ranks_rows_is_refused_before_sharding() -> None:
    """GeRe's KL/L1/L2 under LoRA run a forward on a rank's own general rows only: sharded,
    the other rank would wait in its all-gather forever, so the run is refused at start."""
    from types import SimpleNamespace

    from retain.train.fsdp import refuse_rank_local_forwards

    kl = SimpleNamespace(name="gere_kl", loss="kl", teacher_cached=False)
    with pytest.raises(ValueError, match="gere_kl.*deadlock.*sharding=none"):
        refuse_rank_local_forwards([kl])
    refuse_rank_local_forwards([SimpleNamespace(name="gere", loss="tm", teacher_cached=False)])
    refuse_rank_local_forwards([SimpleNamespace(name="gere_kl", loss="kl", teacher_cached=True)])


def test_a_method_that_cannot_shard_is_refused_at_start_and_ewc_lwf_are_not() -> None:
    """A plugin naming `fsdp2_unsupported` is refused before sharding, saying why; EWC and LwF
    run sharded (tests/test_fsdp_regularisers.py)."""
    from types import SimpleNamespace

    from retain.config import load_config
    from retain.methods.registry import build_plugins
    from retain.train.fsdp import refuse_rank_local_forwards

    odd = SimpleNamespace(name="odd", fsdp2_unsupported="it copies the model")
    with pytest.raises(ValueError, match="cannot run odd yet: it copies.*train.sharding=none"):
        refuse_rank_local_forwards([odd])
    for method in ("ewc", "lwf"):
        config = load_config(None, ["model.name_or_path=tiny-random", f"methods=[{method}]"])
        refuse_rank_local_forwards(build_plugins(config))
