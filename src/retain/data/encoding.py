"""Tokenisation with prompt masking, the sample store and batch collation.

Every training sample is tokenised once and gets a global integer id in the `SampleStore`.
Batches are planned as lists of ids (so plugins can swap rows for replay samples cheaply) and
only then collated into padded tensors.
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


def encode_example(
    tokenizer: object, example: Example, max_length: int
) -> tuple[list[int], list[int]]:
    """input ids and labels; prompt tokens are masked so only the answer carries the loss.

    Over-long examples lose prompt tokens from the left (the answer is what is learned), and the
    answer is cut only if it alone exceeds `max_length`.
    """
    prompt_ids = encode_prompt(tokenizer, example.prompt)
    target_ids = encode_target(tokenizer, example.prompt, example.answer)
    target_ids = target_ids[:max_length]
    keep_prompt = max(0, max_length - len(target_ids))
    prompt_ids = prompt_ids[len(prompt_ids) - keep_prompt :] if keep_prompt else []
    input_ids = prompt_ids + target_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + target_ids
    return input_ids, labels


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

    def add(self, input_ids: list[int], labels: list[int], task: int) -> int:
        self.input_ids.append(input_ids)
        self.labels.append(labels)
        self.task_of.append(task)
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
