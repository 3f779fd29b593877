"""Both scorers from one prefill, fast greedy decoding, validity, normalisations, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from retain.config import ConfigError
from retain.data.normalize import check_label_collisions, olora_normalize
from retain.data.stream_file import stream_from_spec
from retain.data.task import Example, Task
from retain.eval.answers import olora_exact, raw_exact, score_text
from retain.eval.both import score_and_generate
from retain.eval.decode import fast_generate
from retain.eval.evaluate import decoding_settings, encode_eval_set, evaluate_set, score_type
from retain.eval.prefix import common_prefix_length, shared_prefix
from retain.eval.scoring import generate, score_options
from retain.eval.two_scores import (
    LABEL_MARGIN,
    generation_scores,
    invalid_answers,
    is_valid,
    primary_score,
)
from retain.models.tiny import tiny_model_and_tokenizer
from retain.storage.generations import load_generations, save_generations, update_generations


@pytest.fixture(scope="module")
def tiny():
    model, tok = tiny_model_and_tokenizer(seed=3)
    return model.eval(), tok


def _random_set() -> tuple[list[list[int]], list[list[list[int]]]]:
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(0, 250, (n,), generator=g).tolist() for n in (3, 17, 9, 30, 5, 12)]
    options = [
        [torch.randint(0, 250, (k,), generator=g).tolist() for k in ks]
        for ks in ([1, 4, 2, 3], [2, 2], [5, 1, 1, 1], [3, 3, 3, 3], [1], [2, 6])
    ]
    return prompts, options


def test_fast_generation_equals_hf_generate_with_rows_leaving_at_eos(tiny) -> None:
    model, _ = tiny
    prompts, _ = _random_set()
    free = generate(model, prompts, 258, None, 12, batch_size=3)
    eos = free[0][2]  # a token some rows emit mid-answer: those rows end early
    assert any(eos in row[:-1] for row in free[1:])
    for bs in (1, 3, 6):
        ours = fast_generate(model, prompts, 258, eos, 12, batch_size=bs)
        assert ours == generate(model, prompts, 258, eos, 12, batch_size=bs)
    assert any(len(r) < 12 for r in ours) and any(len(r) == 12 for r in ours)


def test_fast_generation_stops_at_stop_strings_like_hf(tiny) -> None:
    model, tok = tiny
    prompt = [tok.bos_token_id, *b"Question: 2+2?\nAnswer:"]
    free = bytes(generate(model, [prompt], 258, None, 40)[0])
    start = next(j for j in range(2, 37) if all(32 <= b < 127 for b in free[j : j + 3]))
    stop = free[start : start + 3].decode()
    ours = fast_generate(model, [prompt, prompt[:-3]], 258, None, 40, stop=(stop,), tokenizer=tok)
    assert bytes(ours[0]) == free[: free.index(stop.encode()) + 3]
    theirs = generate(model, [prompt, prompt[:-3]], 258, None, 40, stop=(stop,), tokenizer=tok)
    for a, b in zip(ours, theirs, strict=True):
        assert tok.decode(a).split(stop)[0] == tok.decode(b).split(stop)[0]


def test_one_prefill_serves_both_scorers_exactly(tiny) -> None:
    """The shared prefill gives the option scores and the greedy answers of the two paths."""
    model, _ = tiny
    prompts, options = _random_set()
    eos = generate(model, prompts, 258, None, 12)[0][2]
    for bs in (2, 6):
        scores, outputs = score_and_generate(model, prompts, options, 258, eos, 12, bs)
        assert outputs == generate(model, prompts, 258, eos, 12, batch_size=bs)
        for row, ref in zip(scores, score_options(model, prompts, options, 258, bs), strict=True):
            assert row == pytest.approx(ref, abs=1e-5)


def test_olora_normalisation() -> None:
    """O-LoRA compares lower-cased answers without punctuation and with whitespace collapsed."""
    assert olora_normalize("  Sci/Tech. ") == "scitech"
    assert olora_exact("World!", "world") == 1.0
    assert olora_exact("not  entailment", "Not entailment") == 1.0
    assert olora_exact("The World", "World") == 0.0  # articles are kept, unlike SQuAD's
    assert olora_exact("Worlds", "World") == 0.0


def test_trace_raw_exact_match() -> None:
    """TRACE compares the text as generated: case and punctuation count, outer spaces do not."""
    assert raw_exact(" World\n", "World") == 1.0
    assert raw_exact("world", "World") == 0.0
    assert raw_exact("World.", "World") == 0.0
    assert score_text("raw_exact", "B", " B ") == 1.0
    assert score_text("olora_exact", "b.", "B") == 1.0


def test_valid_answers_and_the_most_frequent_invalid_ones() -> None:
    labels = ("World", "Sports", "Business", "Sci/Tech")
    assert is_valid("olora_exact", " sci/tech.", labels)
    assert not is_valid("olora_exact", "positive", labels)
    assert not is_valid("raw_exact", "world", labels) and is_valid("raw_exact", "World ", labels)
    texts = ["positive", "World", " positive", "negative", "Sports", "positive"]
    valid = [float(is_valid("olora_exact", t, labels)) for t in texts]
    assert valid == [0, 1, 0, 0, 1, 0]
    assert invalid_answers(texts, valid) == [("positive", 3), ("negative", 1)]


def test_evaluation_keeps_both_scores_validity_and_text(tiny) -> None:
    model, tok = tiny
    opts = ("Sci/Tech", "World", "Sports")
    ex = [Example(f"headline {i}:", opts[i % 3], opts) for i in range(5)]
    task = Task("agnews", [], ex, "generate", "olora_exact")
    data = encode_eval_set(tok, task, ex, context_length=256)
    assert data.max_new_tokens == max(len(o) for o in data.options[0]) + LABEL_MARGIN
    result = evaluate_set(model, tok, data, 2)
    texts = result.generations
    assert len(texts) == 5 and result.predictions == texts
    assert result.scores == result.metrics["generate"] == [
        olora_exact(t, e.answer) for t, e in zip(texts, ex, strict=True)
    ]
    assert result.metrics["valid"] == [float(is_valid("olora_exact", t, opts)) for t in texts]
    by_options = evaluate_set(model, tok, data, 2, score="loglik")
    assert by_options.scores == by_options.metrics["loglik"] == result.metrics["loglik"]
    assert by_options.metrics["generate"] == result.metrics["generate"]
    assert score_type(task, "bytes") == "olora_exact"
    assert score_type(task, "bytes", "loglik") == "accuracy_norm"
    settings = decoding_settings(task, "sum")
    assert settings["primary"] == "generate" and settings["also"] == "loglik"


def test_primary_score_follows_the_protocol_unless_overridden() -> None:
    ex = [Example("q:", "no", ("yes", "no"))]
    loglik = Task("t", [], ex)
    gen = Task("g", [], ex, "generate", "olora_exact")
    assert primary_score(loglik, None) == "loglik" and primary_score(gen, None) == "generate"
    assert primary_score(loglik, "generate") == "generate"
    assert primary_score(gen, "loglik", options=False) == "generate"  # no options: one score
    with pytest.raises(ValueError, match="eval.score must be one of generate, loglik"):
        primary_score(gen, "bleu")


def test_labels_that_normalise_alike_are_refused_at_load(tmp_path: Path) -> None:
    rows = [{"prompt": "q:", "answer": "World"}, {"prompt": "r:", "answer": "world."}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    spec = {"tasks": [{"name": "news", "train": "d.jsonl", "test": "d.jsonl",
                       "format": "prompt_answer", "labels": ["World", "world."],
                       "scoring": "generate", "metric": "olora_exact"}]}
    with pytest.raises(ConfigError, match=r"task 'news': labels 'World' and 'world\.' both"):
        stream_from_spec(spec, tmp_path)
    spec["tasks"][0]["metric"] = "raw_exact"  # case and dot count there: the labels differ
    assert stream_from_spec(spec, tmp_path).tasks[0].metric == "raw_exact"
    check_label_collisions("t", ["yes", "no"], "exact_match")


def test_generations_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "generations.jsonl.gz"
    update_generations(path, 0, {"a": ["x", "y"], "b": ["z"]})
    update_generations(path, 1, {"a": ["x2", "y2"]})
    update_generations(path, 0, {"b": ["z0"]})
    expected = {(0, "a"): ["x", "y"], (0, "b"): ["z0"], (1, "a"): ["x2", "y2"]}
    assert load_generations(path) == expected
    save_generations(path, {})
    assert load_generations(path) == {} and load_generations(tmp_path / "none.gz") == {}


def test_a_shared_prefix_is_computed_once_and_changes_nothing(tiny) -> None:
    model, _ = tiny
    prompts, options = _random_set()
    head = list(range(40, 60))  # 20 tokens every prompt opens with
    prompts = [head + p for p in prompts]
    assert common_prefix_length(prompts) == 20
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # each keeps a token of its own
    assert shared_prefix(model, prompts) is not None
    assert shared_prefix(model, prompts[:1]) is None  # one prompt: nothing to share with
    eos = generate(model, prompts, 258, None, 10)[0][2]
    for bs in (2, 6):
        scores, outputs = score_and_generate(model, prompts, options, 258, eos, 10, bs)
        assert outputs == generate(model, prompts, 258, eos, 10, batch_size=bs)
        assert fast_generate(model, prompts, 258, eos, 10, batch_size=bs) == outputs
        for row, ref in zip(scores, score_options(model, prompts, options, 258, bs), strict=True):
            assert row == pytest.approx(ref, abs=1e-4)


def test_per_example_options_decide_validity_per_example() -> None:
    """ARC / OpenBookQA list their own options: a valid answer is one of that example's."""
    ex = [Example("q1:", "a bird", ("a bird", "a fish")), Example("q2:", "red", ("red", "blue"))]
    task = Task("arc", [], ex)
    scores, valid = generation_scores(task, ex, ["A Bird.", "a bird"])
    assert valid == [1.0, 0.0]  # "a bird" is no option of the second example
    assert scores == [1.0, 0.0]
    assert generation_scores(task, [Example("q:", "1")], ["1"]) == ([1.0], None)
