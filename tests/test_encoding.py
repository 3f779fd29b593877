"""Tokenisation with prompt masking and collation."""

from __future__ import annotations

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


def test_long_prompts_lose_their_start_not_the_answer() -> None:
    tok = byte_tokenizer()
    ex = Example("x" * 100 + " end:", "yes")
    ids, labels = encode_example(tok, ex, max_length=20)
    assert len(ids) == 20
    answer = [t for t in labels if t != IGNORE_INDEX]
    assert answer == encode_target(tok, ex.prompt, ex.answer)
    assert tok.decode(ids[: 20 - len(answer)]).endswith("end:")


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
