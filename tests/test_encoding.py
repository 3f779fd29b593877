"""Tokenisation with prompt masking and collation."""

from __future__ import annotations

import pytest

from retain.data.encoding import (
    IGNORE_INDEX,
    BatchPlan,
    SampleStore,
    collate,
    encode_example,
    encode_prompt,
    encode_target,
)
from retain.data.task import Example
from retain.models.tiny import byte_tokenizer


def test_only_answer_tokens_carry_the_loss() -> None:
    tok = byte_tokenizer()
    ex = Example("Question: 2+3?\nAnswer:", "5")
    ids, labels = encode_example(tok, ex, max_length=256)
    prompt = encode_prompt(tok, ex.prompt)
    target = encode_target(tok, ex.prompt, ex.answer)
    assert ids == prompt + target
    assert labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    assert labels[len(prompt) :] == target
    # the answer is " 5" followed by EOS
    assert tok.decode(target[:-1]) == " 5" and target[-1] == tok.eos_token_id


def test_over_long_prompt_without_a_passage_is_an_error_not_cut() -> None:
    """The question is never cut silently (it used to lose its start)."""
    tok = byte_tokenizer()
    ex = Example("x" * 100 + " end:", "yes")
    with pytest.raises(ValueError, match=r"task 'words' train record 3.*data\.max_length"):
        encode_example(tok, ex, max_length=20, task="words", index=3)


def test_long_answer_keeps_its_eos_and_the_passage_is_cut() -> None:
    tok = byte_tokenizer()
    prompt = "Summarise.\n" + "p" * 80 + "\nAnswer:"
    ex = Example(prompt, "a" * 30, context=(11, 91))
    ids, labels = encode_example(tok, ex, max_length=64)
    target = encode_target(tok, ex.prompt, ex.answer)
    assert len(ids) == 64 and ids[-1] == tok.eos_token_id
    assert [t for t in labels if t != IGNORE_INDEX] == target
    # 64 - 32 answer tokens leave 32 for the prompt: BOS + 19 fixed characters + 12 of the passage
    prompt_text = tok.decode(ids[: 64 - len(target)], skip_special_tokens=True)
    assert prompt_text == "Summarise.\n" + "p" * 12 + "\nAnswer:"


def test_answer_longer_than_max_length_is_an_error_not_cut() -> None:
    """An answer cut to `max_length` used to lose its EOS (and all of its prompt)."""
    tok = byte_tokenizer()
    ex = Example("Q:", "y" * 30)
    with pytest.raises(ValueError, match=r"task 't' train record 0: the answer is 32 tokens"):
        encode_example(tok, ex, max_length=20, task="t", index=0)
    with pytest.raises(ValueError, match="no room for the prompt"):
        encode_example(tok, ex, max_length=32, task="t", index=0)


def test_collate_pads_right_and_keeps_metadata() -> None:
    store = SampleStore()
    a = store.add([5, 6, 7], [IGNORE_INDEX, 6, 7], task=0)
    b = store.add([8, 9], [IGNORE_INDEX, 9], task=1)
    batch = collate(store, BatchPlan([a, b], [False, True]), pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7], [8, 9, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch.labels.tolist() == [[IGNORE_INDEX, 6, 7], [IGNORE_INDEX, 9, IGNORE_INDEX]]
    assert batch.task_ids.tolist() == [0, 1] and batch.is_replay.tolist() == [False, True]
    assert store.answer_tokens([a, b]) == 3
