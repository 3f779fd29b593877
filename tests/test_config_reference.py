"""The config reference is generated from the model, committed, and says what every key means."""

from __future__ import annotations

from retain.config import RunConfig
from retain.config_reference import DOC_PATH, NOTES, config_keys, config_reference


def test_committed_reference_is_the_generated_one() -> None:
    assert DOC_PATH.read_text(encoding="utf-8") == config_reference(), (
        "docs/config.md is out of date: run `python -m retain.config_reference --write`"
    )


def test_every_key_has_a_type_a_default_and_a_meaning() -> None:
    keys = list(config_keys())
    missing = [k.key for k in keys if not k.meaning]
    assert not missing, f"give these config fields a Field(description=...): {missing}"
    assert all(k.type and k.default for k in keys)
    dumped = RunConfig().model_dump()
    for k in keys:  # every leaf of a default config is documented, and nothing else
        node = dumped
        for part in k.key.split("."):
            node = node[part]
    assert len(keys) == len(set(k.key for k in keys))


def test_notes_only_cover_existing_keys_without_a_description() -> None:
    described = {k.key for k in config_keys() if k.meaning and k.key not in NOTES}
    keys = {k.key for k in config_keys()}
    assert set(NOTES) <= keys, f"notes for keys that do not exist: {set(NOTES) - keys}"
    for key in NOTES:
        *path, field = key.split(".")
        section = RunConfig
        for part in path:
            section = section.model_fields[part].annotation  # type: ignore[assignment]
        assert section.model_fields[field].description is None, (
            f"{key} has a description now: delete its entry from NOTES"
        )
    assert described


def test_reference_rows() -> None:
    text = config_reference()
    assert "| `train.lr` | number (> 0) | `0.0002` |" in text
    assert "| `data.data_dir` | text | `$RETAIN_DATA_DIR, else ../shared/data` |" in text
    assert "| `model.finetune` | one of: lora, full | `lora` |" in text
    assert "| `model.lora.target_modules` | list of text | `[q_proj, v_proj]` |" in text
    assert "| `eval.general.mmlu_subjects` | list of text or null | `null` |" in text
    assert "## `mssr`" in text and "## Top level" in text
