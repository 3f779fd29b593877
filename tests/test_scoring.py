"""Scoring: cached-prefix log-likelihood equals the direct computation; answers; generation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from retain.data.task import Example, Task
from retain.eval.answers import (
    contains_match,
    exact_match,
    final_answer,
    math_exact,
    normalize,
    token_f1,
)
from retain.eval.evaluate import encode_eval_set, example_scores
from retain.eval.scoring import generate, perplexity, score_options, score_options_reference
from retain.models.tiny import tiny_model_and_tokenizer


@pytest.fixture(scope="module")
def tiny():
    model, tok = tiny_model_and_tokenizer(seed=3)
    return model.eval(), tok


def _direct(model, prompt: list[int], option: list[int]) -> float:
    """log p(option | prompt) by hand: one forward over the concatenation."""
    ids = torch.tensor([prompt + option])
    with torch.no_grad():
        logp = F.log_softmax(model(input_ids=ids).logits[0], dim=-1)
    return sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(option))


def test_cached_prefix_scores_equal_direct_computation(tiny) -> None:
    model, _ = tiny
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 250, (n,), generator=g).tolist() for n in (3, 17, 9, 30, 5)]
    options = [
        [torch.randint(0, 250, (k,), generator=g).tolist() for k in ks]
        for ks in ([1, 4, 2, 3], [2, 2], [5, 1, 1, 1], [3, 3, 3, 3], [1])
    ]
    ours = score_options(model, prompts, options, pad_id=258, batch_size=2)
    for p, opts, row in zip(prompts, options, ours, strict=True):
        assert len(row) == len(opts)
        for o, s in zip(opts, row, strict=True):
            assert s == pytest.approx(_direct(model, p, o), abs=1e-4)
    reference = score_options_reference(model, prompts, options)
    for row, ref in zip(ours, reference, strict=True):
        assert row == pytest.approx(ref, abs=1e-4)


def test_single_token_options_skip_the_second_pass(tiny) -> None:
    model, _ = tiny
    prompts, options = [[1, 2, 3], [4, 5]], [[[7], [8]], [[9], [10], [11]]]
    ours = score_options(model, prompts, options, pad_id=258)
    reference = score_options_reference(model, prompts, options)
    for row, ref in zip(ours, reference, strict=True):
        assert row == pytest.approx(ref, abs=1e-5)


def test_loglik_accuracy_picks_the_most_likely_option(tiny) -> None:
    model, tok = tiny
    ex = [Example(f"q{i}:", a, ("yes", "no", "maybe")) for i, a in enumerate(["yes", "no"])]
    task = Task("t", [], ex, "loglik", "accuracy")
    data = encode_eval_set(tok, task, ex, 64)
    direct = [[_direct(model, p, o) for o in opts]
              for p, opts in zip(data.prompts, data.options, strict=True)]
    expected = [float(max(range(3), key=row.__getitem__) == gold)
                for row, gold in zip(direct, data.answer_index, strict=True)]
    assert example_scores(model, tok, data, 4) == expected


def test_batched_generation_matches_one_by_one(tiny) -> None:
    model, _ = tiny
    prompts = [[1, 2, 3, 4, 5], [6, 7], [8, 9, 10]]
    batched = generate(model, prompts, pad_id=258, eos_id=None, max_new_tokens=5, batch_size=3)
    single = [generate(model, [p], 258, None, 5)[0] for p in prompts]
    assert batched == single and all(len(x) == 5 for x in batched)


def test_perplexity_matches_mean_nll(tiny) -> None:
    model, _ = tiny
    text = [3, 4, 5, 6, 7, 8]
    with torch.no_grad():
        logp = F.log_softmax(model(input_ids=torch.tensor([text])).logits[0], dim=-1)
    nll = -sum(float(logp[i, text[i + 1]]) for i in range(len(text) - 1)) / (len(text) - 1)
    assert perplexity(model, [text, [1, 2, 3]][:1], pad_id=258) == pytest.approx(
        torch.exp(torch.tensor(nll)).item(), rel=1e-4)


def test_answer_normalisation_and_scores() -> None:
    assert normalize("The  Answer, is: Paris!") == "answer is paris"
    assert exact_match("the Paris.", "paris") == 1.0
    assert contains_match("I think it is Paris, France", "paris") == 1.0
    assert token_f1("the cat sat", "cat sat down") == pytest.approx(2 * (1.0 * 2 / 3) / (1 + 2 / 3))
    assert final_answer("so 3 + 4 = 7\n#### 1,200") == "1200"
    assert final_answer("the result is \\boxed{2.50}") == "2.5"
    assert final_answer("5 apples then 12") == "12"
    assert math_exact("... 72 clips", "Natalia sold ... #### 72") == 1.0
    assert math_exact("73", "#### 72") == 0.0
