"""What runs inside each rank of the guard's own launch (started by torchrun), and the shard
check that tests/scenario_worker.py runs in the suite's batched launch:

  guard cpu|default      build an Accelerator (cpu=True, or the default a user might write)
                         and apply retain's process-count guard;
  shards                 shard the tiny LoRA model and check the shards, `gathered` and the
                         full-state round trip.
"""

from __future__ import annotations

import sys

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from retain.train.distributed import check_process_count


def guard(kind: str) -> None:
    accelerator = Accelerator(cpu=True) if kind == "cpu" else Accelerator()
    check_process_count(accelerator)
    print(f"accepted: {accelerator.num_processes} processes", flush=True)


def shards() -> None:
    from torch.distributed.tensor import DTensor

    from retain.config import ModelConfig
    from retain.models.adapters import prepare_for_finetuning, trainable_state_dict
    from retain.models.sharding import gathered, is_sharded
    from retain.models.tiny import tiny_model_and_tokenizer
    from retain.train.fsdp import full_trainable_state, load_full_trainable_state, shard_model

    accelerator = Accelerator(cpu=True)
    check_process_count(accelerator)
    set_seed(0)
    model, _ = tiny_model_and_tokenizer()
    cfg = ModelConfig.model_validate({"lora": {"target_modules": ["q_proj", "v_proj"]}})
    model = prepare_for_finetuning(model, cfg)
    with torch.no_grad():  # LoRA's B starts at zero: make every factor tell shards apart
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape))
    before = trainable_state_dict(model)
    shard_model(model, accelerator)
    assert is_sharded(model)
    world = accelerator.num_processes
    for name, p in model.named_parameters():
        assert isinstance(p, DTensor), name
        assert p.to_local().numel() < p.numel() or p.shape[0] < world, name  # a shard
    main = accelerator.is_main_process
    full = full_trainable_state(model)  # whole on the main process only
    assert full.keys() == (before.keys() if main else set())
    for name, value in full.items():
        assert torch.equal(value, before[name]), name
    with gathered(model):
        for name, p in model.named_parameters():
            assert not isinstance(p, DTensor), name
            if p.requires_grad:
                assert torch.equal(p, before[name]), name  # whole on every rank
    changed = {name: value * 2 + 1 for name, value in before.items()}
    load_full_trainable_state(model, changed)
    after = full_trainable_state(model)
    assert len(after) == (len(changed) if main else 0)
    for name, value in after.items():
        assert torch.equal(value, changed[name]), name
    try:
        load_full_trainable_state(model, dict(list(changed.items())[1:]))
    except ValueError as exc:
        assert "1 missing" in str(exc), exc
    else:
        raise AssertionError("a trainable state with a missing tensor was accepted")
    print(f"shards ok on rank {accelerator.process_index}", flush=True)


if __name__ == "__main__":
    mode, rest = sys.argv[1], sys.argv[2:]
    if mode == "guard":
        guard(rest[0])
    elif mode == "shards":
        shards()
    else:
        raise SystemExit(f"unknown mode {mode!r}")
