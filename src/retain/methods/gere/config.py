"""The `general:` section: GeRe's general replay set, its loss and how it mixes into batches."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from retain.config_base import Section


class GeneralReplayConfig(Section):
    """Settings of general-sample replay; spec defaults (gere.md) unless a docstring says."""

    source: str = Field(
        "self",
        description="the general replay set: a local file (jsonl/json/parquet/txt with a "
        "`text` field), `hf:<id>[:<config>]:<split>`, or `self` (the untouched base model "
        "writes it from varied opening prompts before training, seeded)",
    )
    size: int = Field(1000, gt=0, description="rows of the replay set (paper: 1000)")
    max_tokens: int = Field(
        563, gt=1, description="tokens kept of each document (reference: 563), no packing"
    )
    loss: Literal["lm", "tm", "kl", "l1", "l2"] = Field(
        "tm",
        description="lm: label fitting only; tm: + threshold-margin loss on final hidden "
        "states (the method); kl: + KL to the base model's next-token distribution; "
        "l1/l2: + feature distance to the base model's final hidden states",
    )
    weight: float | Literal["dy"] = Field(
        100.0,
        description="w of the auxiliary term: a number (reference 100), or `dy` (equal in "
        "value to the replay rows' LM loss, recomputed every micro-batch)",
    )
    mixing: Literal["concat", "per_batch"] = Field(
        "concat",
        description="concat: the replay set joins the task's training data, shuffled with "
        "it; per_batch: exactly `per_batch_rows` replay rows in every global batch",
    )
    per_batch_rows: int = Field(1, gt=0, description="k of per_batch mixing (k < global batch)")
