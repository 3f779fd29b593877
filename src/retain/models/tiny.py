"""Tiny randomly initialised Llama and a byte-level tokenizer, both built in code.

Unit and end-to-end tests need a real causal LM whose training step takes milliseconds and that
needs no download; `load_backbone` serves it under the name `tiny-random`.
"""

from __future__ import annotations

from functools import cache

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

TINY_NAME = "tiny-random"
BOS_TOKEN, EOS_TOKEN, PAD_TOKEN = "<s>", "</s>", "<pad>"
BOS_ID, EOS_ID, PAD_ID = 256, 257, 258
BYTE_VOCAB_SIZE = 259


@cache
def byte_to_unicode() -> dict[int, str]:
    """The usual byte-level BPE alphabet: printable bytes map to themselves, the rest to
    code points from 256 on, so that every byte is one visible, whitespace-free character."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping: dict[int, str] = {}
    extra = 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A tokenizer with one token per UTF-8 byte (ids 0-255) plus `<s>`, `</s>`, `<pad>`.

    Any text encodes and decodes losslessly; like a Llama tokenizer it prepends BOS when
    `add_special_tokens=True` and appends nothing.
    """
    vocab = {ch: b for b, ch in byte_to_unicode().items()}
    vocab.update({BOS_TOKEN: BOS_ID, EOS_TOKEN: EOS_ID, PAD_TOKEN: PAD_ID})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B",
        special_tokens=[(BOS_TOKEN, BOS_ID)],
    )
    tok.add_special_tokens([AddedToken(t, special=True) for t in (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        clean_up_tokenization_spaces=False,
        model_max_length=2048,
    )


def tiny_config(
    vocab_size: int = BYTE_VOCAB_SIZE,
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    bos_id: int | None = BOS_ID,
    eos_id: int | None = EOS_ID,
    pad_id: int | None = PAD_ID,
) -> LlamaConfig:
    """A Llama config small enough that a training step takes milliseconds on a CPU."""
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads // 2 if heads % 2 == 0 else heads,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )


def tiny_model_and_tokenizer(
    seed: int = 0,
    vocab: str = "bytes",
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A randomly initialised tiny Llama (float32, CPU, eval mode) and its tokenizer.

    `vocab="bytes"` is the only vocabulary: it needs no files, so tests run anywhere. The
    initialisation depends only on `seed` and leaves the global RNG state untouched.
    """
    if vocab != "bytes":
        raise ValueError(f"tiny model: unknown vocab {vocab!r}; available: 'bytes'")
    tokenizer = byte_tokenizer()
    config = tiny_config(layers=layers, hidden=hidden, heads=heads)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = PAD_ID
    model.eval()
    return model, tokenizer
