"""The general replay set: documents from a file, a Hugging Face dataset, or the base model itself.

One document per row, its first `general.max_tokens` tokens, tokenised WITHOUT special tokens
(no BOS/EOS, as the reference), no packing. CE targets on a row are its tokens 2..L.
Decision: a document of fewer than 2 tokens has no CE target and is skipped (the next row of
the source takes its place).

Held-out general text for perplexity (the WikiText-2 paragraphs of the general suite) must be
disjoint from the replay set. Decision: a replay document that contains one of those paragraphs
(or is contained in one), compared with whitespace collapsed, is dropped and the next row of the
source is taken; the count is logged, so a source that overlaps says so instead of inflating
the perplexity of a GeRe run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from retain.config_base import ConfigError
from retain.config_sections import CoreConfig
from retain.data.readers import HF_PREFIX, DataFormatError, parse_hf_id, read_records
from retain.data.records import from_text
from retain.methods.gere.config import GeneralReplayConfig

SELF = "self"
SELF_SEED_TAG = 0x53454C46

OPENING_PROMPTS: tuple[str, ...] = (
    "The history of the city begins",
    "In mathematics, a prime number is",
    "The recipe calls for",
    "Scientists have long wondered why",
    "The first thing you notice about the village is",
    "During the winter months, the farmers",
    "A good night's sleep depends on",
    "The museum's newest exhibition",
    "When the train finally arrived,",
    "Photosynthesis is the process by which",
    "The committee met on Tuesday to discuss",
    "Learning a second language",
    "The river flows north through",
    "Her grandmother used to say that",
    "The software update introduced",
    "In the early nineteenth century,",
    "The best way to store fresh herbs",
    "Volcanoes form when",
    "The team's coach explained that",
    "Most people do not realise that",
    "The letter was dated",
    "An economy grows when",
    "The old lighthouse stood",
    "To change a flat tyre, first",
    "The novel tells the story of",
    "Honeybees communicate by",
    "After the election, the new government",
    "The human heart has four chambers",
    "On the morning of the festival,",
    "The concept of zero",
    "Good teachers often",
    "The chemical formula for water",
    "In a small café near the station,",
    "The mountain trail climbs",
    "Computers store information as",
    "The ancient Romans built",
    "Every spring, the migrating birds",
    "The instructions on the box say",
    "A healthy diet includes",
    "The orchestra began to play",
    "The theory of evolution explains",
    "When I first moved to the city,",
    "The bridge was completed in",
    "Rainforests cover about",
    "The company announced that its profits",
    "Chess is a game in which",
    "The children ran down to the beach",
    "Electric cars differ from petrol cars in",
    "The treaty was signed by",
    "In her speech, the mayor",
    "Water boils at",
    "The library opens at nine and",
    "Medieval castles were designed to",
    "The results of the experiment showed",
    "A common mistake when writing essays is",
    "The island is known for",
    "Jazz music originated in",
    "The following steps describe how to",
    "Planets orbit the sun because",
    "The neighbours had never seen",
    "Public transport in the region",
    "The poem describes",
    "The price of bread rose",
    "Before the invention of the printing press,",
)
"""Varied openings for `self`: history, science, daily life, instructions, stories, news."""


@dataclass
class ReplaySet:
    """Token ids of every replay row, where they came from, and what was left out."""

    rows: list[list[int]]
    source: str
    dropped_overlap: int = 0
    dropped_short: int = 0
    forward_passes: int = 0
    """Batched forwards of the untouched model that writing the set took (`self`: one per
    decoding step of each batch); a cost of the method, like its per-step forwards."""

    @property
    def tokens(self) -> int:
        return sum(len(r) for r in self.rows)

    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum([len(r) for r in self.rows])]).astype(np.int64)

    def state_dict(self) -> dict[str, Any]:
        flat = [t for r in self.rows for t in r]
        return {
            "ids": np.asarray(flat, dtype=np.int64),
            "offsets": self.offsets(),
            "source": self.source,
            "dropped_overlap": self.dropped_overlap,
            "dropped_short": self.dropped_short,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ReplaySet:
        ids, offsets = np.asarray(state["ids"]), np.asarray(state["offsets"])
        rows = [ids[offsets[i] : offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]
        return cls(rows, str(state["source"]), int(state["dropped_overlap"]),
                   int(state["dropped_short"]))


def _normal(text: str) -> str:
    return " ".join(text.split())


def held_out_paragraphs(config: CoreConfig) -> list[str]:
    """The general suite's perplexity paragraphs (empty when the suite or perplexity is off)."""
    ge = config.eval.general
    if not ge.enabled or not ge.wikitext_paragraphs:
        return []
    from retain.data.general import wikitext_paragraphs

    return wikitext_paragraphs(config.data.data_dir, ge.wikitext_paragraphs)


class Overlap:
    """Whether a document shares a held-out paragraph (whitespace collapsed)."""

    def __init__(self, paragraphs: Iterable[str]) -> None:
        self.paragraphs = [p for p in (_normal(x) for x in paragraphs) if p]

    def __call__(self, document: str) -> bool:
        doc = _normal(document)
        return any(p in doc or (doc and doc in p) for p in self.paragraphs)


def source_path(source: str, data_dir: str) -> Path:
    """A local source file: as given (from the working directory), else under data_dir."""
    path = Path(source).expanduser()
    if path.is_file():
        return path
    under = Path(data_dir).expanduser() / source
    if not path.is_absolute() and under.is_file():
        return under
    raise ConfigError(
        f"general.source: {source!r} is no file (looked at {path.absolute()} and {under}); give "
        f"a jsonl/json/parquet/txt file with a `text` field, {HF_PREFIX}<id>[:<config>]:<split>, "
        f"or {SELF}"
    )


def _hf_texts(source: str) -> Iterator[str]:
    """Rows of a Hub dataset split, streamed (the paper's SlimPajama has millions of rows)."""
    dataset_id, config, split = parse_hf_id(source)
    import datasets

    try:
        rows = datasets.load_dataset(dataset_id, config, split=split, streaming=True)
    except Exception as exc:  # network, missing config or split: all reach the user the same way
        raise DataFormatError(f"general.source {source}: cannot load the dataset: {exc}") from exc
    for i, row in enumerate(rows):
        text = row.get("text") if isinstance(row, dict) else None
        if not isinstance(text, str):
            raise DataFormatError(f"general.source {source} record {i}: expected a `text` string")
        yield text


def source_texts(source: str, data_dir: str) -> Iterator[str]:
    """The source's documents in order (files are read whole, Hub datasets streamed)."""
    if source.startswith(HF_PREFIX):
        yield from _hf_texts(source)
        return
    path = source_path(source, data_dir)
    yield from from_text(read_records(path), str(path))


def documents_from_texts(
    texts: Iterable[str],
    tokenizer: Any,
    cfg: GeneralReplayConfig,
    held_out: Iterable[str] = (),
    source: str = "",
) -> ReplaySet:
    """The first `cfg.size` usable documents, each cut to `cfg.max_tokens` tokens."""
    overlap = Overlap(held_out)
    out = ReplaySet([], source)
    for text in texts:
        if len(out.rows) >= cfg.size:
            break
        if overlap.paragraphs and overlap(text):
            out.dropped_overlap += 1
            continue
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])[: cfg.max_tokens]
        if len(ids) < 2:
            out.dropped_short += 1
            continue
        out.rows.append([int(t) for t in ids])
    if not out.rows:
        raise DataFormatError(f"general.source {source}: no document with at least 2 tokens")
    return out


def generate_documents(
    model: nn.Module,
    tokenizer: Any,
    cfg: GeneralReplayConfig,
    seed: int,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
) -> ReplaySet:
    """`self`: the untouched model continues opening prompt i mod 64 for row i, in batches
    seeded by (run seed, batch), so the set depends on neither the RNG state nor the order."""
    pad = int(tokenizer.pad_token_id)
    eos = tokenizer.eos_token_id
    prompts = [OPENING_PROMPTS[i % len(OPENING_PROMPTS)] for i in range(cfg.size)]
    encoded = [list(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    rows: list[list[int]] = []
    passes = 0
    was_training = model.training
    model.eval()
    sample = cfg.self_decoding == "sample"
    for b, start in enumerate(range(0, len(encoded), cfg.self_batch_size)):
        batch = encoded[start : start + cfg.self_batch_size]
        width = max(len(p) for p in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, p in enumerate(batch):  # left-padded: generation continues every row at the end
            ids[r, width - len(p) :] = torch.tensor(p)
            mask[r, width - len(p) :] = 1
        new = max(cfg.max_tokens - min(len(p) for p in batch), 1)
        options: dict[str, Any] = {"do_sample": sample, "max_new_tokens": new, "pad_token_id": pad}
        if sample:
            options.update(temperature=cfg.self_temperature, top_p=cfg.self_top_p, top_k=0)
        devices = [device] if device.type == "cuda" else []
        batch_seed = np.random.SeedSequence([seed, SELF_SEED_TAG, b]).generate_state(1)[0]
        with torch.random.fork_rng(devices=devices), torch.no_grad(), autocast():
            torch.manual_seed(int(batch_seed))
            ids, mask = ids.to(device), mask.to(device)
            out = model.generate(input_ids=ids, attention_mask=mask, **options)
        passes += out.shape[1] - width
        for r, p in enumerate(batch):
            tail = out[r, width:].tolist()
            if eos is not None and int(eos) in tail:
                tail = tail[: tail.index(int(eos))]
            tail = [t for t in tail if t != pad]
            rows.append((p + tail)[: cfg.max_tokens])
    model.train(was_training)
    kept = [r for r in rows if len(r) >= 2]
    return ReplaySet(kept, SELF, 0, sum(len(r) < 2 for r in rows), forward_passes=passes)


def build_replay_set(
    config: CoreConfig,
    tokenizer: Any,
    model: nn.Module | None = None,
    device: torch.device | None = None,
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
) -> ReplaySet:
    """The replay set `config.general` asks for (the model is needed for `self` only)."""
    cfg = config.general
    if cfg.source == SELF:
        if model is None:
            raise ValueError("general.source self needs the untouched model")
        return generate_documents(
            model, tokenizer, cfg, config.seed, device or torch.device("cpu"), autocast
        )
    texts = source_texts(cfg.source, config.data.data_dir)
    return documents_from_texts(texts, tokenizer, cfg, held_out_paragraphs(config), cfg.source)
