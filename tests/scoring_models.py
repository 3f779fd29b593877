"""Tiny models of two families (Llama with sdpa and eager attention, GPT-2) on which the
evaluation paths must score alike: shared by the option-pass and prefill tests."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from retain.models.tiny import PAD_ID, tiny_model_and_tokenizer


def _llama(attention: str) -> torch.nn.Module:
    model, _ = tiny_model_and_tokenizer(seed=5)
    model.set_attn_implementation(attention)
    return model.eval()


def _gpt2() -> torch.nn.Module:
    config = GPT2Config(vocab_size=259, n_positions=256, n_embd=64, n_layer=2, n_head=4,
                        bos_token_id=256, eos_token_id=257, pad_token_id=PAD_ID)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        return GPT2LMHeadModel(config).eval()


MODELS = {"llama-sdpa": lambda: _llama("sdpa"), "llama-eager": lambda: _llama("eager"),
          "gpt2": _gpt2}
