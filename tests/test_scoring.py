"""Scoring: cached-prefix log-likelihood equals the direct computation; answers; generation."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from retain.data.normalize import normalize
from retain.data.task import Example, Task
from retain.eval.answers import contains_match, exact_match, token_f1
from retain.eval.evaluate import (
    decoding_settings,
    encode_eval_set,
    evaluate_set,
    example_scores,
    score_type,
    task_score,
)
from retain.eval.scoring import (
    choose_option,
    generate,
    perplexity,
    score_options,
    score_options_reference,
)
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
    assert example_scores(model, tok, data, 4, loglik_norm="sum") == expected


def test_options_are_scored_with_eos_appended(tiny) -> None:
    _, tok = tiny
    ex = [Example("q:", "no", ("yes", "no"))]
    data = encode_eval_set(tok, Task("t", [], ex), ex, 64)
    assert all(o[-1] == tok.eos_token_id for o in data.options[0])
    assert tok.decode(data.options[0][1][:-1]) == " no"


def test_accuracy_and_byte_normalised_accuracy(tiny) -> None:
    """Both are reported per example; `loglik_norm` names the one the score matrix uses."""
    model, tok = tiny
    opts = ("Sci/Tech", "World", "Sports and games")
    ex = [Example(f"headline {i}:", opts[i % 3], opts) for i in range(6)]
    task = Task("agnews", [], ex)
    data = encode_eval_set(tok, task, ex, context_length=256)
    sums = [[_direct(model, p, o) for o in row]
            for p, row in zip(data.prompts, data.options, strict=True)]
    per_byte = [[s / len(o.encode()) for s, o in zip(row, opts, strict=True)] for row in sums]
    acc = [float(max(range(3), key=r.__getitem__) == g)
           for r, g in zip(sums, data.answer_index, strict=True)]
    acc_norm = [float(max(range(3), key=r.__getitem__) == g)
                for r, g in zip(per_byte, data.answer_index, strict=True)]
    result = evaluate_set(model, tok, data, 4, loglik_norm="bytes")
    assert {k: result.metrics[k] for k in ("accuracy", "accuracy_norm")} == {
        "accuracy": acc, "accuracy_norm": acc_norm
    }
    assert result.metrics["loglik"] == acc_norm  # the option score beside the generated one
    assert set(result.metrics) == {"accuracy", "accuracy_norm", "loglik", "generate", "valid"}
    assert result.scores == acc_norm and result.ties == 0
    assert evaluate_set(model, tok, data, 4, loglik_norm="sum").scores == acc
    assert task_score(model, tok, data, 4) == pytest.approx(100 * sum(acc_norm) / 6)


def test_ties_pick_the_first_option_and_are_counted(tiny) -> None:
    model, tok = tiny
    ex = [Example("q:", "b", ("a", "a", "b")), Example("q:", "a", ("a", "a", "b"))]
    data = encode_eval_set(tok, Task("t", [], ex), ex, context_length=64)
    result = evaluate_set(model, tok, data, 4)
    # the two "a" options tie exactly; whenever "a" wins, the first "a" is the choice
    assert result.ties == sum(p == "a" for p in result.predictions)
    assert choose_option([1.0, 3.0, 3.0, 2.0]) == (1, True)
    assert choose_option([1.0, 3.0, 2.0]) == (1, False)


class Scripted(torch.nn.Module):
    """A stand-in model whose `generate` returns fixed new tokens and records its arguments."""

    def __init__(self, new_tokens: list[int]) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.new_tokens = new_tokens
        self.kwargs: dict[str, object] = {}

    def generate(self, input_ids: torch.Tensor, **kwargs: object) -> torch.Tensor:
        self.kwargs = kwargs
        new = torch.tensor([self.new_tokens] * input_ids.shape[0])
        return torch.cat([input_ids, new], dim=1)


def test_generation_is_cut_at_eos() -> None:
    model = Scripted([5, 6, 257, 7, 8])
    assert generate(model, [[1, 2]], pad_id=258, eos_id=257, max_new_tokens=5) == [[5, 6]]


class ScriptedLM(torch.nn.Module):
    """A stand-in causal LM whose greedy continuation is `script`, one token per call."""

    def __init__(self, script: list[int], vocab: int = 259) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.script, self.vocab, self.calls = script, vocab, 0

    def forward(self, input_ids: torch.Tensor, **kwargs: object) -> SimpleNamespace:
        logits = torch.zeros(input_ids.shape[0], input_ids.shape[1], self.vocab)
        logits[:, -1, self.script[min(self.calls, len(self.script) - 1)]] = 1.0
        self.calls += 1
        return SimpleNamespace(logits=logits)


def test_stop_strings_end_generation_and_cut_the_text(tiny) -> None:
    _, tok = tiny
    text = " 9 * 2 = 18\n#### 18\nQuestion: Tom has"
    model = ScriptedLM(list(text.encode()))
    ex = [Example("Question: eggs?\nAnswer:", "2 * 9 = 18\n#### 18")]
    task = Task(
        "gsm8k", [], ex, "generate", "math_exact", max_new_tokens=len(text), stop=("Question:",)
    )
    data = encode_eval_set(tok, task, ex, context_length=256)
    result = evaluate_set(model, tok, data, 4)
    assert model.calls == len(" 9 * 2 = 18\n#### 18\nQuestion:")  # stopped at the string
    assert result.predictions == [" 9 * 2 = 18\n#### 18\n"] and result.scores == [1.0]
    assert result.generations == result.predictions


def test_real_generation_stops_at_a_stop_string(tiny) -> None:
    """transformers' own stop-string criterion ends the row as soon as the string appears."""
    model, tok = tiny
    prompt = [tok.bos_token_id, *b"Question: 2+2?\nAnswer:"]
    free = bytes(generate(model, [prompt], 258, None, 40)[0])
    start = next(j for j in range(2, 37) if all(32 <= b < 127 for b in free[j : j + 3]))
    stop = free[start : start + 3]
    stopped = generate(model, [prompt], 258, None, 40, stop=(stop.decode(),), tokenizer=tok)[0]
    assert bytes(stopped) == free[: free.index(stop) + 3]


def test_batched_generation_matches_one_by_one(tiny) -> None:
    model, _ = tiny
    prompts = [[1, 2, 3, 4, 5], [6, 7], [8, 9, 10]]
    batched = generate(model, prompts, pad_id=258, eos_id=None, max_new_tokens=5, batch_size=3)
    single = [generate(model, [p], 258, None, 5)[0] for p in prompts]
    assert batched == single and all(len(x) == 5 for x in batched)


def test_perplexity_pads_texts_of_different_length(tiny) -> None:
    """Two texts of different length in one padded batch give the pooled per-token NLL."""
    model, _ = tiny
    texts = [[3, 4, 5, 6, 7, 8], [1, 2, 3]]
    total, count = 0.0, 0
    for text in texts:
        with torch.no_grad():
            logp = F.log_softmax(model(input_ids=torch.tensor([text])).logits[0], dim=-1)
        total -= sum(float(logp[i, text[i + 1]]) for i in range(len(text) - 1))
        count += len(text) - 1
    expected = torch.exp(torch.tensor(total / count)).item()
    assert perplexity(model, texts, pad_id=258, batch_size=2) == pytest.approx(expected, rel=1e-4)
    alone = perplexity(model, texts[:1], pad_id=258)
    assert alone != pytest.approx(expected, rel=1e-3)  # the second text really counts


def test_answer_normalisation_and_scores() -> None:
    assert normalize("The  Answer, is: Paris!") == "answer is paris"
    assert exact_match("the Paris.", "paris") == 1.0
    assert contains_match("I think it is Paris, France", "paris") == 1.0
    assert token_f1("the cat sat", "cat sat down") == pytest.approx(2 * (1.0 * 2 / 3) / (1 + 2 / 3))


def test_matrix_records_which_loglik_accuracy_it_holds() -> None:
    ex = [Example("q:", "no", ("yes", "no"))]
    loglik = Task("t", [], ex)
    gen = Task("g", [], [Example("q:", "1")], "generate", "math_exact", stop=("Question:",))
    assert score_type(loglik, "bytes") == "accuracy_norm"
    assert score_type(loglik, "sum") == "accuracy" and score_type(gen, "bytes") == "math_exact"
    assert decoding_settings(loglik, "sum")["loglik_norm"] == "sum"
    assert decoding_settings(gen, "bytes") == gen.decoding and gen.decoding["stop"] == ["Question:"]
