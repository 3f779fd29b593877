"""Options scored in one sequence under a tree mask: equal to the repeated-cache pass and to
`score_options`, on two model families and both mask-taking attention implementations, and the
cropped cache decodes as a fresh prefill does."""

from __future__ import annotations

import pytest
import torch
import transformers
from transformers import MistralConfig, MistralForCausalLM

from retain.eval.both import score_and_generate
from retain.eval.decode import fast_generate, greedy_from_cache
from retain.eval.option_tree import (
    TREE_FAMILIES,
    options_in_one_sequence,
    tree_mask,
    tree_mask_usable,
)
from retain.eval.prefix import prefill_rows, shared_prefix
from retain.eval.scoring import (
    options_from_cache,
    prefill,
    score_options,
    score_options_reference,
)
from retain.models.tiny import PAD_ID
from tests.scoring_models import MODELS

TOL = 1e-5



@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request) -> torch.nn.Module:
    return MODELS[request.param]()


def _ragged(shared: int = 0) -> tuple[list[list[int]], list[list[list[int]]]]:
    """Prompts of ragged lengths (left-padded in a batch), ragged option counts and lengths,
    single-token options among longer ones; `shared` tokens every prompt opens with."""
    g = torch.Generator().manual_seed(1)
    head = torch.randint(0, 250, (shared,), generator=g).tolist()
    prompts = [head + torch.randint(0, 250, (n,), generator=g).tolist()
               for n in (4, 19, 9, 31, 2, 12, 7)]
    options = [
        [torch.randint(0, 250, (k,), generator=g).tolist() for k in ks]
        for ks in ([1, 4, 2, 3], [2, 2], [5, 1, 1, 1, 3], [3, 3, 3], [1], [2, 6], [1, 1, 2])
    ]
    return prompts, options


def _close(a: list[list[float]], b: list[list[float]]) -> None:
    assert [len(r) for r in a] == [len(r) for r in b]
    for x, y in zip(a, b, strict=True):
        assert x == pytest.approx(y, abs=TOL)


@pytest.mark.parametrize("shared", [0, 12])
def test_tree_pass_scores_and_decodes_like_the_repeated_pass(model, shared) -> None:
    prompts, options = _ragged(shared)
    assert (shared_prefix(model, prompts) is not None) == bool(shared)
    cache, _, _ = prefill(model, prompts[:1], PAD_ID)
    assert tree_mask_usable(model, cache)  # the tree path is the one under test
    eos = fast_generate(model, prompts, PAD_ID, None, 9)[0][3]
    for bs in (3, 7):
        tree, out_tree = score_and_generate(model, prompts, options, PAD_ID, eos, 9, bs)
        repeated, out_repeated = score_and_generate(
            model, prompts, options, PAD_ID, eos, 9, bs, tree=False
        )
        _close(tree, repeated)
        _close(tree, score_options(model, prompts, options, PAD_ID, bs))
        assert out_tree == out_repeated == fast_generate(model, prompts, PAD_ID, eos, 9, bs)
        assert any(len(o) < 9 for o in out_tree)  # some rows left the batch at EOS


def test_the_cropped_cache_decodes_like_a_fresh_prefill(model) -> None:
    prompts, options = _ragged(12)
    prefix = shared_prefix(model, prompts)
    cache, mask, first = prefill_rows(model, prompts, PAD_ID, prefix)
    length = cache.get_seq_length()
    scored = options_in_one_sequence(model, cache, mask, first, options, PAD_ID)
    assert cache.get_seq_length() == length
    fresh, fresh_mask, fresh_first = prefill_rows(model, prompts, PAD_ID, prefix)
    for kept, new in zip(cache.layers, fresh.layers, strict=True):
        assert torch.equal(kept.keys, new.keys) and torch.equal(kept.values, new.values)
    decoded = greedy_from_cache(model, cache, mask, first, None, 8)
    assert decoded == greedy_from_cache(model, fresh, fresh_mask, fresh_first, None, 8)
    again, again_mask, again_first = prefill_rows(model, prompts, PAD_ID, prefix)
    _close(scored, options_from_cache(model, again, again_mask, again_first, options, PAD_ID))


def test_the_tree_mask_lets_an_option_see_the_prompt_and_its_own_past_only() -> None:
    prompt = torch.tensor([[0, 1, 1], [1, 1, 1]])
    which = torch.tensor([[0, 0, 1, -1], [0, 1, 1, 2]])  # row 0 ends in a pad
    allowed = tree_mask(prompt, which, torch.float32)[:, 0] == 0
    assert allowed.shape == (2, 4, 7)
    assert torch.equal(allowed[0, :, :3], torch.tensor([[False, True, True]] * 4))
    assert torch.equal(allowed[0, :, 3:], torch.tensor([
        [1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool))
    assert torch.equal(allowed[1, :, 3:], torch.tensor([
        [1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]], dtype=torch.bool))


def test_a_model_that_refuses_the_mask_keeps_the_repeated_pass() -> None:
    """Sliding-window layers cannot be cropped back exactly, and flash attention takes no 4D
    mask: both stay on the repeated-cache pass, with the same scores as `score_options`."""
    config = MistralConfig(vocab_size=259, hidden_size=64, intermediate_size=128,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           sliding_window=6, pad_token_id=PAD_ID)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)
        sliding = MistralForCausalLM(config).eval()
    prompts, options = _ragged()
    cache, _, _ = prefill(sliding, prompts[:1], PAD_ID)
    assert not tree_mask_usable(sliding, cache)
    scores, _ = score_and_generate(sliding, prompts, options, PAD_ID, None, 4, 3)
    _close(scores, score_options(sliding, prompts, options, PAD_ID, 3))
    llama = MODELS["llama-sdpa"]()
    cache, _, _ = prefill(llama, prompts[:1], PAD_ID)
    llama.config._attn_implementation = "flash_attention_2"
    assert not tree_mask_usable(llama, cache)


FAMILY_CLASSES = {
    "llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2", "qwen3": "Qwen3", "gemma": "Gemma",
    "phi3": "Phi3", "gpt2": "GPT2", "gpt_neox": "GPTNeoX", "olmo2": "Olmo2", "granite": "Granite",
    "smollm3": "SmolLM3",
}


def _family_model(family: str) -> torch.nn.Module:
    """A tiny random model of `family`, with weights large enough that an option's score
    depends strongly on what it attends to."""
    prefix = FAMILY_CLASSES[family]
    config_class = getattr(transformers, f"{prefix}Config")
    sizes = (dict(vocab_size=259, n_embd=64, n_layer=2, n_head=4) if family == "gpt2" else
             dict(vocab_size=259, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, head_dim=16))
    if family not in ("gpt2", "gpt_neox"):
        sizes["num_key_value_heads"] = 2
    if family in ("mistral", "phi3"):
        sizes["sliding_window"] = None  # a sliding window keeps the repeated pass (see above)
    model_class = getattr(transformers, f"{prefix}{'LMHead' if family == 'gpt2' else 'ForCausal'}"
                          f"{'Model' if family == 'gpt2' else 'LM'}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = model_class(config_class(**sizes, pad_token_id=PAD_ID)).eval()
        for p in model.parameters():
            p.data.normal_(0, 0.3)
    return model


@pytest.mark.parametrize("family", sorted(TREE_FAMILIES))
def test_every_family_on_the_tree_path_scores_like_one_forward_per_option(family) -> None:
    model = _family_model(family)
    prompts, options = _ragged()
    prompts, options = prompts[:4], options[:4]
    cache, _, _ = prefill(model, prompts[:1], PAD_ID)
    assert model.config.model_type == family and tree_mask_usable(model, cache)
    scores, _ = score_and_generate(model, prompts, options, PAD_ID, None, 2, 2)
    _close(scores, score_options_reference(model, prompts, options))
