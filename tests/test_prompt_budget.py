"""Prompt budgets: only the declared passage is ever cut, from its end; otherwise a clear error."""

from __future__ import annotations

from typing import Any

import pytest

from retain.data.encoding import (
    IGNORE_INDEX,
    PromptBudgetError,
    encode_prompt,
    encode_target,
    encode_train_example,
    fit_prompt,
)
from retain.data.records import sentence_prompt
from retain.data.task import Example, Task
from retain.eval.evaluate import check_prompt_budgets, encode_eval_set, model_context_length
from retain.eval.two_scores import LABEL_MARGIN
from retain.models.tiny import byte_tokenizer, tiny_model_and_tokenizer

INSTRUCTION = "What is the topic? Choose one from the option."
PASSAGE = "".join(chr(ord("a") + i % 26) for i in range(60))


def passage_example(passage: str = PASSAGE, answer: str = "World") -> Example:
    prompt = sentence_prompt(INSTRUCTION, ["World", "Sports"], passage)
    start = prompt.index(passage)
    return Example(prompt, answer, ("World", "Sports"), context=(start, start + len(passage)))


class SlowTokenizer:
    """The byte tokenizer without offsets, as a slow (Python) tokenizer would behave."""

    is_fast = False

    def __init__(self) -> None:
        self._tok = byte_tokenizer()
        self.eos_token_id = self._tok.eos_token_id

    def __call__(self, text: str, **kwargs: Any) -> Any:
        if kwargs.pop("return_offsets_mapping", False):
            raise NotImplementedError("return_offset_mapping is not available")
        return self._tok(text, **kwargs)


def test_prompt_within_budget_is_untouched() -> None:
    tok = byte_tokenizer()
    ex = passage_example()
    fitted = fit_prompt(tok, ex, budget=500)
    assert fitted.ids == encode_prompt(tok, ex.prompt) and fitted.cut == 0
    assert not fitted.truncated


@pytest.mark.parametrize("tok", [byte_tokenizer(), SlowTokenizer()], ids=["offsets", "pieces"])
def test_passage_loses_its_end_only(tok: Any) -> None:
    ex = passage_example()
    full = len(encode_prompt(tok, ex.prompt))
    fitted = fit_prompt(tok, ex, budget=full - 20)
    assert len(fitted.ids) == full - 20 and fitted.cut == 20 and fitted.truncated
    text = byte_tokenizer().decode(fitted.ids, skip_special_tokens=True)
    assert text == sentence_prompt(INSTRUCTION, ["World", "Sports"], PASSAGE[:40])


def test_prompt_without_passage_is_never_cut() -> None:
    tok = byte_tokenizer()
    ex = Example("Question: " + "how many? " * 10 + "\nAnswer:", "5")
    with pytest.raises(PromptBudgetError) as info:
        fit_prompt(tok, ex, budget=20, task="gsm8k", split="test", index=7)
    message = str(info.value)
    assert "task 'gsm8k' test record 7" in message
    assert f"{len(encode_prompt(tok, ex.prompt))} tokens" in message and "20" in message
    assert "max_prompt_tokens" in message and "max_length" in message
    assert isinstance(info.value, ValueError)


def test_instruction_longer_than_the_budget_is_an_error() -> None:
    tok = byte_tokenizer()
    ex = passage_example()
    fixed = len(encode_prompt(tok, ex.prompt)) - len(PASSAGE)
    assert fit_prompt(tok, ex, budget=fixed).ids[-8:] == encode_prompt(tok, ex.prompt)[-8:]
    with pytest.raises(PromptBudgetError, match=rf"task 'agnews' train record 2.*{fixed}"):
        fit_prompt(tok, ex, budget=fixed - 1, task="agnews", split="train", index=2)


def test_training_keeps_the_whole_answer_and_its_eos() -> None:
    tok = byte_tokenizer()
    ex = passage_example(answer="Sports")
    target = encode_target(tok, ex.prompt, ex.answer)
    max_length = len(encode_prompt(tok, ex.prompt)) + len(target) - 15
    enc = encode_train_example(tok, ex, max_length)
    assert len(enc.input_ids) == max_length
    assert [t for t in enc.labels if t != IGNORE_INDEX] == target
    assert enc.input_ids[-1] == tok.eos_token_id and enc.prompt_cut == 15 and enc.truncated
    assert tok.decode(enc.input_ids[: -len(target)], skip_special_tokens=True).endswith("Answer:")


def test_training_answer_that_cannot_fit_is_an_error() -> None:
    tok = byte_tokenizer()
    ex = Example("Q:", "a very long answer " * 3)
    with pytest.raises(PromptBudgetError, match=r"task 'math' train record 4.*answer.*59 tokens"):
        encode_train_example(tok, ex, 40, task="math", index=4)


def test_eval_prompt_budget_is_not_data_max_length() -> None:
    """A gsm8k-like prompt is kept whole, however small data.max_length is (it used to be 1
    token: max(1, max_length - max_new_tokens))."""
    tok = byte_tokenizer()
    ex = [Example("Question: Janet has 16 eggs and eats 3. How many are left?\nAnswer:", "13")]
    task = Task("gsm8k", [], ex, "generate", "math_exact", max_new_tokens=256)
    data = encode_eval_set(tok, task, ex, context_length=512)
    assert data.prompts == [encode_prompt(tok, ex[0].prompt)] and data.truncated_prompts == 0
    with pytest.raises(PromptBudgetError, match=r"task 'gsm8k' test record 0"):
        encode_eval_set(tok, task, ex, context_length=300)  # 300 - 256 = 44 < 64 tokens


def test_eval_budget_counts_truncated_prompts() -> None:
    tok = byte_tokenizer()
    short = passage_example(passage="short text")
    ex = [passage_example(), short]
    task = Task("agnews", [], ex)
    full = len(encode_prompt(tok, ex[0].prompt))
    data = encode_eval_set(tok, task, ex, context_length=2048, max_prompt_tokens=full - 5)
    assert data.truncated_prompts == 1 and data.prompt_cut == [5, 0]
    assert len(data.prompts[0]) == full - 5
    assert data.prompts[1] == encode_prompt(tok, short.prompt)
    # the default budget is the context minus the answer's room: the greedy answer's, which is
    # the longest option (with its EOS) plus LABEL_MARGIN
    longest = max(len(o) for o in data.options[0])
    assert data.max_new_tokens == longest + LABEL_MARGIN
    data = encode_eval_set(tok, task, ex, context_length=full + longest + LABEL_MARGIN - 3)
    assert data.prompt_cut == [3, 0]


def test_startup_check_refuses_a_task_whose_instruction_does_not_fit() -> None:
    tok = byte_tokenizer()
    ex = passage_example()
    task = Task("agnews", [ex, ex], [ex])
    fixed = len(encode_prompt(tok, ex.prompt)) - len(PASSAGE)
    target = max(len(encode_target(tok, ex.prompt, o)) for o in ex.options or ())
    counts = check_prompt_budgets(tok, [task], max_length=fixed + target + 10, context_length=2048)
    assert counts == {"agnews": {"train": 2, "valid": 0, "test": 0}}
    with pytest.raises(PromptBudgetError, match="task 'agnews' test record 0"):
        check_prompt_budgets(
            tok, [task], max_length=2048, context_length=2048, max_prompt_tokens=fixed - 1
        )


def test_model_context_length() -> None:
    model, _ = tiny_model_and_tokenizer()
    assert model_context_length(model) == 4096
    assert model_context_length(object()) is None
