"""Padding-free prefill: the grouping rule, and scores and greedy outputs equal to the padded
prefill on ragged prompts, with and without a shared prefix, on two model families."""

from __future__ import annotations

import pytest
import torch
from transformers import MistralConfig, MistralForCausalLM

from retain.eval.both import score_and_generate
from retain.eval.decode import fast_generate
from retain.eval.prefix import prefill_rows, shared_prefix
from retain.eval.unpadded import CPU_FORWARD_COST, MODE_ENV, forward_cost, plan_groups
from retain.models.tiny import PAD_ID
from tests.scoring_models import MODELS

TOL = 1e-5



@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request) -> torch.nn.Module:
    return MODELS[request.param]()


def _ragged(shared: int) -> tuple[list[list[int]], list[list[list[int]]]]:
    """Ragged prompts (two of equal length, two one token apart) opening with `shared` common
    tokens, and ragged options."""
    g = torch.Generator().manual_seed(3)
    head = torch.randint(0, 250, (shared,), generator=g).tolist()
    prompts = [head + torch.randint(0, 250, (n,), generator=g).tolist()
               for n in (4, 19, 9, 31, 9, 12, 7, 30, 2)]
    options = [[torch.randint(0, 250, (k,), generator=g).tolist() for k in ks]
               for ks in ([1, 4, 2], [2, 2], [5, 1, 3], [3, 3], [1], [2, 6], [1, 2], [3], [2, 1])]
    return prompts, options


def test_the_rule_pads_only_where_a_forward_costs_more() -> None:
    lengths = [10, 31, 30, 10, 2]
    assert plan_groups(lengths, float("inf")) == [[1, 2, 0, 3, 4]]
    assert plan_groups(lengths, 0.0) == [[1], [2], [0, 3], [4]]
    assert plan_groups(lengths, 4.0) == [[1, 2], [0, 3], [4]]  # one pad saves a forward
    assert plan_groups(lengths, 1000.0) == [[1, 2, 0, 3, 4]]
    assert plan_groups([], 0.0) == []


def test_the_mode_switch_and_the_device_rule(monkeypatch) -> None:
    model = MODELS["llama-sdpa"]()
    monkeypatch.delenv(MODE_ENV, raising=False)
    assert forward_cost(model) == CPU_FORWARD_COST
    monkeypatch.setenv(MODE_ENV, "padded")
    assert forward_cost(model) == float("inf")
    monkeypatch.setenv(MODE_ENV, "unpadded")
    assert forward_cost(model) == 0.0
    monkeypatch.setenv(MODE_ENV, "nopad")
    with pytest.raises(ValueError, match="RETAIN_PREFILL='nopad'"):
        forward_cost(model)


def test_a_sliding_window_model_keeps_the_padded_prefill(monkeypatch) -> None:
    config = MistralConfig(vocab_size=259, hidden_size=64, intermediate_size=128,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           sliding_window=6, pad_token_id=PAD_ID)
    monkeypatch.setenv(MODE_ENV, "unpadded")
    assert forward_cost(MistralForCausalLM(config)) == float("inf")


@pytest.mark.parametrize("shared", [0, 12])
def test_the_assembled_cache_is_the_padded_one(model, shared, monkeypatch) -> None:
    prompts, _ = _ragged(shared)
    prefix = shared_prefix(model, prompts)
    assert (prefix is not None) == bool(shared)
    monkeypatch.setenv(MODE_ENV, "padded")
    cache, mask, first = prefill_rows(model, prompts, PAD_ID, prefix)
    monkeypatch.setenv(MODE_ENV, "unpadded")
    cache2, mask2, first2 = prefill_rows(model, prompts, PAD_ID, prefix)
    assert torch.equal(mask, mask2)
    assert torch.allclose(first, first2, atol=TOL)
    real = mask.bool()[:, None, :, None]  # pads hold different (masked) values
    for a, b in zip(cache.layers, cache2.layers, strict=True):
        assert a.keys.shape == b.keys.shape
        assert torch.allclose(a.keys * real, b.keys * real, atol=TOL)
        assert torch.allclose(a.values * real, b.values * real, atol=TOL)


@pytest.mark.parametrize("shared", [0, 12])
def test_scores_and_greedy_outputs_equal_the_padded_prefill(model, shared, monkeypatch) -> None:
    prompts, options = _ragged(shared)
    monkeypatch.setenv(MODE_ENV, "padded")
    eos = fast_generate(model, prompts, PAD_ID, None, 9)[0][3]
    padded = {bs: score_and_generate(model, prompts, options, PAD_ID, eos, 9, bs)
              for bs in (4, 9)}
    alone = fast_generate(model, prompts, PAD_ID, eos, 9, 4)
    for mode in ("unpadded", "rule"):
        if mode == "rule":
            monkeypatch.delenv(MODE_ENV)
        else:
            monkeypatch.setenv(MODE_ENV, mode)
        for bs, (scores, outputs) in padded.items():
            new_scores, new_outputs = score_and_generate(
                model, prompts, options, PAD_ID, eos, 9, bs)
            assert new_outputs == outputs
            for x, y in zip(new_scores, scores, strict=True):
                assert x == pytest.approx(y, abs=TOL)
        assert fast_generate(model, prompts, PAD_ID, eos, 9, 4) == alone
    assert any(len(o) < 9 for o in alone)  # some rows left the batch at EOS
