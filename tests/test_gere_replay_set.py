"""The general replay set: local files, Hub datasets, the base model's own text; held-out text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retain.config import ConfigError, load_config
from retain.data.readers import DataFormatError
from retain.methods.gere.replay_set import (
    OPENING_PROMPTS,
    build_replay_set,
    generate_documents,
)
from retain.models.tiny import BOS_ID, EOS_ID, tiny_model_and_tokenizer

DOCS = [
    "Rivers carry water from the hills down to the sea.",
    "x",  # one token: no CE target, skipped
    "A library lends books to the people of the town.",
    "The orchestra tuned its instruments before the concert began.",
    "Bread is made from flour, water, salt and yeast.",
]


def _config(tmp_path: Path, source: str, *extra: str):
    return load_config(None, [
        "model.name_or_path=tiny-random", f"output_dir={tmp_path}", f"data.data_dir={tmp_path}",
        f"general.source={source}", "general.size=3", "general.max_tokens=20", *extra,
    ])


def _write(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    if name.endswith(".jsonl"):
        lines = [json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(DOCS)]
        path.write_text("".join(lines))
    elif name.endswith(".json"):
        path.write_text(json.dumps([{"text": d} for d in DOCS]))
    elif name.endswith(".txt"):
        path.write_text("\n".join(DOCS) + "\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"text": DOCS}), path)
    return path


@pytest.mark.parametrize("name", ["set.jsonl", "set.json", "set.txt", "set.parquet"])
def test_file_sources_keep_the_first_rows_cut_and_without_special_tokens(
    tmp_path: Path, name: str
) -> None:
    _, tok = tiny_model_and_tokenizer()
    path = _write(tmp_path, name)
    replay = build_replay_set(_config(tmp_path, str(path)), tok)
    assert replay.dropped_short == 1  # "x": a single byte token
    expected = [DOCS[0], DOCS[2], DOCS[3]]  # the first 3 usable rows, in file order
    assert replay.rows == [list(tok(d, add_special_tokens=False)["input_ids"])[:20]
                           for d in expected]
    assert all(len(r) == 20 for r in replay.rows)  # byte tokens: every document is cut
    assert not any(t in (BOS_ID, EOS_ID) for r in replay.rows for t in r)


def test_a_relative_source_is_also_found_under_data_dir(tmp_path: Path, monkeypatch) -> None:
    _, tok = tiny_model_and_tokenizer()
    _write(tmp_path, "set.jsonl")
    monkeypatch.chdir(tmp_path.parent)
    replay = build_replay_set(_config(tmp_path, "set.jsonl"), tok)
    assert len(replay.rows) == 3


def test_bad_sources_say_what_is_wrong(tmp_path: Path) -> None:
    _, tok = tiny_model_and_tokenizer()
    with pytest.raises(ConfigError, match="general.source: 'missing.jsonl' is no file"):
        build_replay_set(_config(tmp_path, "missing.jsonl"), tok)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "fine words here"}) + "\n" + json.dumps({"body": "x"}))
    with pytest.raises(DataFormatError, match=r"bad.jsonl line 2 .*text"):
        build_replay_set(_config(tmp_path, str(bad)), tok)


def test_rows_that_overlap_the_held_out_paragraphs_are_dropped(tmp_path: Path) -> None:
    """The perplexity paragraphs of the general suite never enter the replay set."""
    _, tok = tiny_model_and_tokenizer()
    wiki = tmp_path / "general_text" / "wikitext2_raw"
    wiki.mkdir(parents=True)
    paragraphs = [DOCS[2], "Stars  are suns\tfar away."]
    (wiki / "wiki.test.raw").write_text("\n = Title = \n\n" + "\n".join(paragraphs) + "\n")
    source = tmp_path / "set.jsonl"
    rows = [DOCS[0], "Stars are suns far away. They shine at night.", DOCS[2], DOCS[3], DOCS[4]]
    source.write_text("".join(json.dumps({"text": d}) + "\n" for d in rows))
    cfg = _config(tmp_path, str(source), "eval.general.enabled=true",
                  "eval.general.wikitext_paragraphs=2")
    replay = build_replay_set(cfg, tok)
    assert replay.dropped_overlap == 2
    assert [tok.decode(r) for r in replay.rows] == [d[:20] for d in (DOCS[0], DOCS[3], DOCS[4])]
    off = build_replay_set(_config(tmp_path, str(source)), tok)  # no suite: nothing held out
    assert off.dropped_overlap == 0 and len(off.rows) == 3


def test_hub_sources_are_streamed(tmp_path: Path, monkeypatch) -> None:
    import datasets

    calls = []

    def fake_load(name, config, split, streaming):
        calls.append((name, config, split, streaming))
        return iter({"text": d} for d in DOCS)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    _, tok = tiny_model_and_tokenizer()
    replay = build_replay_set(_config(tmp_path, "hf:org/corpus:default:train"), tok)
    assert calls == [("org/corpus", "default", "train", True)]
    assert len(replay.rows) == 3 and replay.source == "hf:org/corpus:default:train"


def test_self_is_written_by_the_model_seeded(tmp_path: Path) -> None:
    model, tok = tiny_model_and_tokenizer()
    import torch

    cfg = _config(tmp_path, "self", "general.size=5", "general.self_batch_size=2",
                  "general.max_tokens=60").general
    cpu = torch.device("cpu")
    torch.manual_seed(123)
    one = generate_documents(model, tok, cfg, seed=1, device=cpu)
    state = torch.get_rng_state()
    two = generate_documents(model, tok, cfg, seed=1, device=cpu)
    assert torch.equal(state, torch.get_rng_state())  # the run's generator is left alone
    other = generate_documents(model, tok, cfg, seed=2, device=cpu)
    assert one.rows == two.rows and one.rows != other.rows
    assert len(one.rows) == 5 and all(2 <= len(r) <= 60 for r in one.rows)
    grown = []
    for i, row in enumerate(one.rows):
        prompt = list(tok(OPENING_PROMPTS[i], add_special_tokens=False)["input_ids"])
        assert row[: len(prompt)] == prompt and len(row) > len(prompt)
        grown.append(len(row) - len(prompt))
    # one forward per decoding step of each batch of 2: at least its longest continuation
    assert one.forward_passes >= sum(max(grown[b : b + 2]) for b in range(0, 5, 2))
    assert one.forward_passes <= 3 * 60
    greedy = _config(tmp_path, "self", "general.size=2", "general.self_decoding=greedy",
                     "general.max_tokens=60").general
    assert generate_documents(model, tok, greedy, 1, cpu).rows == \
        generate_documents(model, tok, greedy, 2, cpu).rows
