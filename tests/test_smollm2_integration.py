"""The real bundled SmolLM2-135M: loads offline, answers sensibly, and LoRA training lowers loss.

The first run converts the GGUF (about 30 s on 2 cores) into the shared cache
(`~/.cache/retain/models/smollm2-135m`, or `$RETAIN_CACHE_DIR`); later runs load it in under 1 s.
"""

from __future__ import annotations

import time

import pytest
import torch

from retain.config import LoraConfig, ModelConfig
from retain.models.adapters import prepare_for_finetuning, trainable_state_dict
from retain.models.bundled import BundledModelMissing, bundled_gguf_path
from retain.models.loading import load_backbone

pytestmark = pytest.mark.integration

CPU = torch.device("cpu")
NAME = "smollm2-135m"


def _require_package() -> None:
    try:
        bundled_gguf_path(NAME)
    except BundledModelMissing as exc:
        pytest.skip(f"bundled model not installed: {exc}")


@pytest.fixture(scope="module")
def smollm2():
    _require_package()
    start = time.perf_counter()
    model, tok = load_backbone(ModelConfig(name_or_path=NAME), CPU)
    print(f"\nload_backbone({NAME}) took {time.perf_counter() - start:.2f}s")
    return model, tok


def test_cached_load_is_fast(smollm2):
    start = time.perf_counter()
    model, _ = load_backbone(ModelConfig(name_or_path=NAME), CPU)
    elapsed = time.perf_counter() - start
    print(f"cached load: {elapsed:.2f}s")
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    assert elapsed < 5.0  # < 1 s on an idle machine; generous for a busy CI box


def test_knows_the_capital_of_france(smollm2):
    model, tok = smollm2
    enc = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=8, do_sample=False)
    text = tok.decode(out[0], skip_special_tokens=True)
    print(f"greedy: {text!r}")
    assert "Paris" in text


def test_lora_steps_lower_the_loss():
    _require_package()
    cfg = ModelConfig(name_or_path=NAME, lora=LoraConfig(r=8, alpha=16, dropout=0.0))
    model, tok = load_backbone(cfg, CPU)
    model = prepare_for_finetuning(model, cfg)
    assert all("lora_" in name for name in trainable_state_dict(model, copy=False))
    text = "The retain library keeps old skills while it learns new tasks, step by step."
    enc = tok([text], return_tensors="pt")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    losses = []
    for _ in range(3):
        loss = model(**enc, labels=enc["input_ids"]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    print(f"LoRA losses: {[round(x, 3) for x in losses]}")
    assert losses[2] < losses[0]
