"""Backbone loading rules, the tiny test model and LoRA / full fine-tuning set-up."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from peft import PeftModel

from retain.config import LoraConfig, ModelConfig
from retain.models import loading
from retain.models.adapters import (
    count_parameters,
    linear_module_names,
    load_adapter,
    load_trainable_state_dict,
    prepare_for_finetuning,
    save_adapter,
    trainable_state_dict,
)
from retain.models.loading import ModelLoadError, load_backbone, resolve_dtype
from retain.models.tiny import BOS_ID, EOS_ID, PAD_ID, byte_to_unicode, tiny_model_and_tokenizer

CPU = torch.device("cpu")
TEXTS = ["Hello, world!", "Héllo wörld — 日本語\n\ttabs  and  spaces ", "", "a"]


def lora_cfg(**kw) -> ModelConfig:
    return ModelConfig(name_or_path="tiny-random", finetune="lora", lora=LoraConfig(**kw))


def batch(tokenizer, texts=("the quick brown fox", "jumps over the lazy dog")):
    enc = tokenizer(list(texts), return_tensors="pt", padding=True)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    return {**enc, "labels": labels}


def train_steps(model, tokenizer, steps=3, lr=1e-2) -> list[float]:
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    data = batch(tokenizer)
    losses = []
    for _ in range(steps):
        loss = model(**data).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    model.eval()
    return losses


@torch.no_grad()
def logits(model, tokenizer, text="some text to score") -> torch.Tensor:
    enc = tokenizer(text, return_tensors="pt")
    return model(**enc).logits


# --- tiny model and tokenizer -------------------------------------------------------------------


def test_tokenizer_round_trip_and_bos():
    _, tok = tiny_model_and_tokenizer()
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (BOS_ID, EOS_ID, PAD_ID)
    for text in TEXTS:
        ids = tok(text)["input_ids"]
        assert ids[0] == BOS_ID and EOS_ID not in ids
        assert ids[1:] == list(text.encode("utf-8"))
        assert tok(text, add_special_tokens=False)["input_ids"] == ids[1:]
        assert tok.decode(ids, skip_special_tokens=True) == text
    tok.padding_side = "left"
    padded = tok(["a", "abc"], padding=True)["input_ids"]
    assert padded[0][:2] == [PAD_ID, PAD_ID] and padded[1][0] == BOS_ID


def test_byte_alphabet_is_a_bijection():
    mapping = byte_to_unicode()
    assert len(set(mapping.values())) == 256
    assert all(not ch.isspace() for ch in mapping.values())


def test_tiny_forward_backward_is_fast_and_seeded():
    model, tok = tiny_model_and_tokenizer(seed=3)
    again, _ = tiny_model_and_tokenizer(seed=3)
    other, _ = tiny_model_and_tokenizer(seed=4)
    assert torch.equal(logits(model, tok), logits(again, tok))
    assert not torch.equal(logits(model, tok), logits(other, tok))
    losses = train_steps(model, tok, steps=5)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    # milliseconds when the CPU is free; the bound only catches an accidentally large model
    start = time.perf_counter()
    train_steps(model, tok, steps=3)
    assert (time.perf_counter() - start) / 3 < 2.0


def test_tiny_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny_model_and_tokenizer()
    assert torch.equal(torch.rand(3), expected)


def test_load_backbone_tiny_random():
    model, tok = load_backbone(ModelConfig(name_or_path="tiny-random"), CPU)
    assert model.dtype == torch.float32 and not model.training
    assert tok.pad_token_id == PAD_ID


# --- fine-tuning set-up ---------------------------------------------------------------------


def test_lora_trains_only_lora_parameters():
    model, tok = tiny_model_and_tokenizer()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    peft_model = prepare_for_finetuning(model, lora_cfg(r=4, alpha=8, dropout=0.0))
    assert isinstance(peft_model, PeftModel)
    names = list(trainable_state_dict(peft_model))
    assert names and all("lora_" in n for n in names)
    assert any("q_proj" in n for n in names) and any("v_proj" in n for n in names)
    assert not any("k_proj" in n or "mlp" in n for n in names)
    trainable, total = count_parameters(peft_model)
    assert 0 < trainable < total / 10
    train_steps(peft_model, tok)
    after = peft_model.get_base_model().state_dict()
    for key, value in base.items():
        peft_key = key.replace(".weight", ".base_layer.weight")
        assert torch.equal(after.get(key, after.get(peft_key)), value), key


def test_full_finetuning_trains_everything():
    model, _ = tiny_model_and_tokenizer()
    for p in model.parameters():
        p.requires_grad_(False)
    prepared = prepare_for_finetuning(
        model, ModelConfig(name_or_path="tiny-random", finetune="full")
    )
    assert prepared is model
    trainable, total = count_parameters(prepared)
    assert trainable == total


def test_bad_target_module_lists_linear_layers():
    model, _ = tiny_model_and_tokenizer()
    with pytest.raises(ValueError, match="qproj") as err:
        prepare_for_finetuning(model, lora_cfg(target_modules=["qproj", "v_proj"]))
    for name in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        assert name in str(err.value)
    assert "v_proj'" not in str(err.value).split("available")[0]  # only the bad one is named
    assert "q_proj" in linear_module_names(model)


def test_all_linear_targets():
    model, _ = tiny_model_and_tokenizer()
    peft_model = prepare_for_finetuning(model, lora_cfg(target_modules=["all-linear"]))
    names = " ".join(trainable_state_dict(peft_model))
    assert "mlp.down_proj" in names and "lm_head" not in names


def test_prepare_twice_fails():
    model, _ = tiny_model_and_tokenizer()
    peft_model = prepare_for_finetuning(model, lora_cfg())
    with pytest.raises(ValueError, match="already"):
        prepare_for_finetuning(peft_model, lora_cfg())


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_trainable_state_dict_round_trip(finetune):
    cfg = ModelConfig(name_or_path="tiny-random", finetune=finetune)
    model, tok = tiny_model_and_tokenizer()
    model = prepare_for_finetuning(model, cfg)
    train_steps(model, tok)
    state = trainable_state_dict(model)
    fresh, _ = tiny_model_and_tokenizer()
    fresh = prepare_for_finetuning(fresh, cfg)
    assert not torch.equal(logits(model, tok), logits(fresh, tok))
    load_trainable_state_dict(fresh, state)
    assert torch.equal(logits(model, tok), logits(fresh, tok))
    # copy=True is a snapshot: further training leaves it unchanged
    name = next(iter(state))
    before = state[name].clone()
    train_steps(model, tok, steps=1)
    assert torch.equal(state[name], before)


def test_load_trainable_state_dict_rejects_mismatch():
    model, _ = tiny_model_and_tokenizer()
    model = prepare_for_finetuning(model, lora_cfg(r=4))
    state = trainable_state_dict(model)
    other, _ = tiny_model_and_tokenizer()
    other = prepare_for_finetuning(other, lora_cfg(r=8))
    with pytest.raises(ValueError, match="shape"):
        load_trainable_state_dict(other, state)
    state.pop(next(iter(state)))
    with pytest.raises(ValueError, match="1 missing"):
        load_trainable_state_dict(model, state)


def test_peft_adapter_save_load_round_trip(tmp_path):
    model, tok = tiny_model_and_tokenizer()
    model = prepare_for_finetuning(model, lora_cfg())
    train_steps(model, tok)
    out = save_adapter(model, tmp_path / "adapter", tokenizer=tok)
    assert (out / "adapter_config.json").is_file()
    assert (out / "adapter_model.safetensors").is_file()
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 8 and sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    base, _ = tiny_model_and_tokenizer()
    restored = load_adapter(base, out)
    assert torch.allclose(logits(model, tok), logits(restored, tok), atol=1e-6)


def test_full_model_save_round_trip(tmp_path):
    cfg = ModelConfig(name_or_path="tiny-random", finetune="full")
    model, tok = tiny_model_and_tokenizer()
    model = prepare_for_finetuning(model, cfg)
    train_steps(model, tok)
    out = save_adapter(model, tmp_path / "full", tokenizer=tok)
    assert (out / "model.safetensors").is_file()
    reloaded, tok2 = load_backbone(ModelConfig(name_or_path=str(out)), CPU)
    assert torch.equal(logits(model, tok), logits(reloaded, tok2))


# --- loading rules ----------------------------------------------------------------------------


def test_resolve_dtype():
    assert resolve_dtype("auto", CPU) == torch.float32
    assert resolve_dtype("bfloat16", CPU) == torch.bfloat16
    assert resolve_dtype("float16", torch.device("cuda")) == torch.float16


def test_missing_paths_fail_clearly(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_backbone(ModelConfig(name_or_path=str(tmp_path / "nope.gguf")), CPU)
    with pytest.raises(ModelLoadError, match="neither an existing directory"):
        load_backbone(ModelConfig(name_or_path=str(tmp_path / "nope")), CPU)


def test_hub_id_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="hub id"):
        load_backbone(ModelConfig(name_or_path="no-such-org/no-such-model"), CPU)
    assert time.perf_counter() - start < 10


def test_local_folder_gets_pad_token_and_no_remote_code(tmp_path, monkeypatch):
    model, tok = tiny_model_and_tokenizer()
    tok.pad_token = None
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    seen: list[object] = []
    real = loading.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.append(kwargs.get("trust_remote_code"))
        return real(*args, **kwargs)

    monkeypatch.setattr(loading.AutoModelForCausalLM, "from_pretrained", spy)
    _, loaded_tok = load_backbone(ModelConfig(name_or_path=str(tmp_path)), CPU)
    assert loaded_tok.pad_token == "</s>" and loaded_tok.pad_token_id == EOS_ID
    assert seen == [False]
    load_backbone(ModelConfig(name_or_path=str(tmp_path), trust_remote_code=True), CPU)
    assert seen == [False, True]
