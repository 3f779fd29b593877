"""The `general:` section: GeRe's general replay set, its loss and how it mixes into batches."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from retain.config_base import Section


class GeneralReplayConfig(Section):
    """Settings of general-sample replay (docs/methods/gere.md).

    Decision: the defaults are sized for LoRA on a small model and a CPU, and they are the
    ones `mssr+gere+procl` runs with: 200 rows of 128 tokens written by the model itself,
    2 rows of every global batch, w = 1. The paper's scale is `size: 1000`, `max_tokens: 563`,
    `mixing: concat`, and `weight: 100` for full fine-tuning or `dy` for LoRA. `dy` is not the
    default here: it sets w = CE/L_TM, and since L_TM is a mean over the few violating
    elements, the term's gradient is large while its value is small; with gradient clipping
    it crowded out the task's gradient (built-in stream, 30 steps a task, lr 1e-3: arithmetic
    25 % and unit conversion 58 % after their tasks, against 75 % and 96 % with w = 1 and
    83 % and 100 % for sequential LoRA).
    """

    source: str = Field(
        "self",
        description="the general replay set: a local file (jsonl/json/parquet/txt with a "
        "`text` field; relative paths from the working directory, else from data.data_dir), "
        "`hf:<id>[:<config>]:<split>`, or `self` (the untouched base model writes it from "
        "varied opening prompts before training, seeded)",
    )
    size: int = Field(200, gt=0, description="rows of the replay set (paper: 1000)")
    max_tokens: int = Field(
        128, gt=1, description="tokens kept of each document (reference: 563), no packing"
    )
    loss: Literal["lm", "tm", "kl", "l1", "l2"] = Field(
        "tm",
        description="lm: label fitting only; tm: + threshold-margin loss on final hidden "
        "states (the method); kl: + KL to the base model's next-token distribution; "
        "l1/l2: + feature distance to the base model's final hidden states",
    )
    weight: float | Literal["dy"] = Field(
        1.0,
        description="w of the auxiliary term: a number (reference 100), or `dy` (equal in "
        "value to the replay rows' LM loss, recomputed every micro-batch)",
    )
    mixing: Literal["concat", "per_batch"] = Field(
        "per_batch",
        description="concat: the replay set joins the task's training data, shuffled with "
        "it; per_batch: exactly `per_batch_rows` replay rows in every global batch",
    )
    per_batch_rows: int = Field(2, gt=0, description="k of per_batch mixing (k < global batch)")
    cache: Literal["memory", "mmap"] = Field(
        "memory",
        description="where the compact state cache (1.6 bits per element) lives during "
        "training: in memory, or memory-mapped from a file in the run directory",
    )
    teacher_topk: int = Field(
        64,
        gt=0,
        description="kl under full fine-tuning: base-model log-probabilities kept per token "
        "(the rest is one tail bucket)",
    )
    self_decoding: Literal["sample", "greedy"] = Field(
        "sample",
        description="source `self`: how the base model continues the opening prompts (greedy "
        "repeats a prompt's document, so sampling is the default)",
    )
    self_temperature: float = Field(
        0.8, gt=0, description="source `self`, sampling: softmax temperature"
    )
    self_top_p: float = Field(
        0.95, gt=0, le=1, description="source `self`, sampling: nucleus (top-p) mass"
    )
    self_batch_size: int = Field(
        16, gt=0, description="source `self`: documents generated together"
    )
    target_batch_size: int | None = Field(
        None,
        gt=0,
        description="rows per forward when the base model's targets are computed; null: "
        "train.batch_size (the training forward's shape)",
    )


PAPER: dict[str, str] = {"loss": "tm", "weight": "dy", "mixing": "concat"}
"""What `gere_paper` sets, whatever the `general:` section says (docs/methods/gere_paper.md);
it also weights the step per micro-batch as the reference code does
(`Plugin.ce_per_micro_batch`). The set itself (source, size, max_tokens) is the section's."""


def paper_settings(cfg: GeneralReplayConfig) -> GeneralReplayConfig:
    """`cfg` with the reference code's loss, weight and mixing (`PAPER`) in place of ours."""
    return cfg.model_copy(update=PAPER)
