"""Tokenisation with prompt masking, the sample store and batch collation.

Every training sample is tokenised once and gets a global integer id in the `SampleStore`.
Batches are planned as lists of ids (so plugins can swap rows for replay samples cheaply) and
only then collated into padded tensors.

Prompt budget rule (training and evaluation alike): a prompt that does not fit its token budget
loses tokens from the END of its declared passage (`Example.context`) only, so the passage keeps
its beginning; the instruction, the options, the question and the `Answer:` cue are never cut.
A prompt that cannot fit that way, and a training answer that leaves no room for a prompt, raise
`PromptBudgetError` instead of being cut silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from retain.data.task import Example

IGNORE_INDEX = -100


def answer_text(prompt: str, answer: str) -> str:
    """The target continuation: a space separates it from a prompt that does not end in one."""
    if not prompt or prompt[-1].isspace():
        return answer
    return " " + answer


def encode_prompt(tokenizer: object, prompt: str) -> list[int]:
    return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])  # type: ignore[operator]


def encode_target(tokenizer: object, prompt: str, answer: str, add_eos: bool = True) -> list[int]:
    ids = list(tokenizer(answer_text(prompt, answer), add_special_tokens=False)["input_ids"])  # type: ignore[operator]
    eos = getattr(tokenizer, "eos_token_id", None)
    if add_eos and eos is not None:
        ids.append(int(eos))
    return ids


class PromptBudgetError(ValueError):
    """A prompt (or training answer) that cannot fit its token budget without losing its
    instruction or question; the message names task, split, record, token counts and the fix."""


TRAIN_FIX = "raise data.max_length"
EVAL_FIX = "raise eval.max_prompt_tokens (or data.max_length for training prompts)"


def where(task: str = "", split: str = "", index: int | None = None) -> str:
    """`task 'gsm8k' test record 7`: the place named in budget errors."""
    parts = [f"task {task!r}" if task else "a task"]
    if split:
        parts.append(split)
    if index is not None:
        parts.append(f"record {index}")
    return " ".join(parts)


@dataclass(frozen=True)
class FittedPrompt:
    """Prompt token ids within budget and how many passage tokens were dropped to get there."""

    ids: list[int]
    cut: int = 0

    @property
    def truncated(self) -> bool:
        return self.cut > 0


def _with_offsets(
    tokenizer: object, prompt: str, span: tuple[int, int]
) -> tuple[list[int], int, int] | None:
    """Ids of the whole prompt, tokenised once, and the token range [a, b) inside `span`.

    A token straddling the span's edge stays outside it, so it is never cut. None when the
    tokenizer gives no character offsets (slow tokenizers).
    """
    if not getattr(tokenizer, "is_fast", False):
        return None
    try:
        enc = tokenizer(prompt, add_special_tokens=True, return_offsets_mapping=True)  # type: ignore[operator]
    except NotImplementedError:
        return None
    start, end = span
    offsets = enc["offset_mapping"]
    inside = [k for k, (a, b) in enumerate(offsets) if b > a and a >= start and b <= end]
    ids = list(enc["input_ids"])
    return (ids, inside[0], inside[-1] + 1) if inside else (ids, 0, 0)


def _in_pieces(tokenizer: object, prompt: str, span: tuple[int, int]) -> tuple[list[int], int, int]:
    """The fallback without offsets: before, inside and after the span tokenised separately."""
    start, end = span
    head = encode_prompt(tokenizer, prompt[:start])
    body = list(tokenizer(prompt[start:end], add_special_tokens=False)["input_ids"])  # type: ignore[operator]
    tail = list(tokenizer(prompt[end:], add_special_tokens=False)["input_ids"])  # type: ignore[operator]
    return head + body + tail, len(head), len(head) + len(body)


def fit_prompt(
    tokenizer: object,
    example: Example,
    budget: int,
    *,
    task: str = "",
    split: str = "",
    index: int | None = None,
    fix: str = EVAL_FIX,
) -> FittedPrompt:
    """The prompt's ids in at most `budget` tokens, cut by the rule in the module docstring."""
    located = None
    if example.context is not None:
        located = _with_offsets(tokenizer, example.prompt, example.context)
    ids = located[0] if located is not None else encode_prompt(tokenizer, example.prompt)
    if len(ids) <= budget:
        return FittedPrompt(ids)
    place = where(task, split, index)
    if budget < 1:
        raise PromptBudgetError(
            f"{place}: no room for the prompt ({len(ids)} tokens; budget {budget}); {fix}"
        )
    if example.context is None:
        raise PromptBudgetError(
            f"{place}: the prompt is {len(ids)} tokens but the budget is {budget}, and it has no "
            f"passage that may be shortened (instruction and question are never cut); {fix}"
        )
    if located is None:
        located = _in_pieces(tokenizer, example.prompt, example.context)
    ids, a, b = located
    if len(ids) <= budget:  # the pieces may tokenise a little shorter than the whole
        return FittedPrompt(ids)
    fixed = len(ids) - (b - a)
    if fixed > budget:
        raise PromptBudgetError(
            f"{place}: the prompt is {len(ids)} tokens, {fixed} of them outside its passage "
            f"(instruction, options, question, answer cue: never cut), but the budget is "
            f"{budget}; {fix}"
        )
    cut = len(ids) - budget
    return FittedPrompt(ids[: b - cut] + ids[b:], cut)


@dataclass(frozen=True)
class EncodedExample:
    """A training sample: ids, labels (prompt masked) and the passage tokens cut to fit."""

    input_ids: list[int]
    labels: list[int]
    prompt_cut: int = 0

    @property
    def truncated(self) -> bool:
        return self.prompt_cut > 0


def encode_train_example(
    tokenizer: object,
    example: Example,
    max_length: int,
    *,
    task: str = "",
    index: int | None = None,
    split: str = "train",
) -> EncodedExample:
    """input ids and labels; prompt tokens are masked so only the answer carries the loss.

    The answer is kept whole with its EOS (what is learned); the prompt gets the rest of
    `max_length` and is fitted by `fit_prompt`. An answer that leaves no room for one prompt
    token is an error.
    """
    target_ids = encode_target(tokenizer, example.prompt, example.answer)
    if len(target_ids) >= max_length:
        raise PromptBudgetError(
            f"{where(task, split, index)}: the answer is {len(target_ids)} tokens with its EOS, "
            f"which leaves no room for the prompt in data.max_length={max_length}; {TRAIN_FIX}"
        )
    fitted = fit_prompt(
        tokenizer,
        example,
        max_length - len(target_ids),
        task=task,
        split=split,
        index=index,
        fix=f"{TRAIN_FIX} (now {max_length}, the answer takes {len(target_ids)})",
    )
    input_ids = fitted.ids + target_ids
    labels = [IGNORE_INDEX] * len(fitted.ids) + target_ids
    return EncodedExample(input_ids, labels, fitted.cut)


def encode_example(
    tokenizer: object,
    example: Example,
    max_length: int,
    *,
    task: str = "",
    index: int | None = None,
) -> tuple[list[int], list[int]]:
    """`encode_train_example` as (input ids, labels), for callers that do not count cuts."""
    enc = encode_train_example(tokenizer, example, max_length, task=task, index=index)
    return enc.input_ids, enc.labels


def encode_text(tokenizer: object, text: str, max_length: int) -> tuple[list[int], list[int]]:
    """Plain text (general corpora): every token carries the loss."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])[:max_length]  # type: ignore[operator]
    return ids, list(ids)


@dataclass
class SampleStore:
    """All tokenised training samples of a run, addressed by a global id.

    `task_of[id]` is the stream index of the task the sample belongs to (-1 for samples that
    belong to no task, such as general text).
    """

    input_ids: list[list[int]] = field(default_factory=list)
    labels: list[list[int]] = field(default_factory=list)
    task_of: list[int] = field(default_factory=list)
    loss_tokens: list[int] = field(default_factory=list)
    """Tokens of each sample that carry the loss: labels after the first position (the first
    token is never predicted), as the loop's `token_losses` counts them; counted once here so
    that planning a step costs no pass over the labels."""

    def add(self, input_ids: list[int], labels: list[int], task: int) -> int:
        self.input_ids.append(input_ids)
        self.labels.append(labels)
        self.task_of.append(task)
        self.loss_tokens.append(sum(1 for t in labels[1:] if t != IGNORE_INDEX))
        return len(self.input_ids) - 1

    def __len__(self) -> int:
        return len(self.input_ids)

    def answer_tokens(self, ids: list[int]) -> int:
        return sum(sum(1 for t in self.labels[i] if t != IGNORE_INDEX) for i in ids)


@dataclass
class BatchPlan:
    """The rows of the next batch before collation; plugins edit this in `compose_batch`."""

    sample_ids: list[int]
    is_replay: list[bool]


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    sample_ids: torch.Tensor
    task_ids: torch.Tensor
    is_replay: torch.Tensor

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])

    def to(self, device: torch.device) -> Batch:
        return Batch(*(t.to(device) for t in self.__dict__.values()))


def collate(store: SampleStore, plan: BatchPlan, pad_id: int) -> Batch:
    """Right-pad the planned rows into tensors."""
    rows = plan.sample_ids
    width = max(len(store.input_ids[i]) for i in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, i in enumerate(rows):
        n = len(store.input_ids[i])
        input_ids[r, :n] = torch.tensor(store.input_ids[i])
        labels[r, :n] = torch.tensor(store.labels[i])
        mask[r, :n] = 1
    return Batch(
        input_ids=input_ids,
        attention_mask=mask,
        labels=labels,
        sample_ids=torch.tensor(rows, dtype=torch.long),
        task_ids=torch.tensor([store.task_of[i] for i in rows], dtype=torch.long),
        is_replay=torch.tensor(plan.is_replay, dtype=torch.bool),
    )
