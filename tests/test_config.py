"""Configuration: YAML + overrides, and errors that name the key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from retain.config import ConfigError, load_config


def test_yaml_and_overrides_compose(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("name: x\ntrain:\n  lr: 0.1\n  batch_size: 4\nmethods: [fixed]\n")
    cfg = load_config(path, ["train.lr=1e-3", "replay.buffer_size=64", "methods=mssr"])
    assert cfg.name == "x" and cfg.train.batch_size == 4
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.replay.buffer_size == 64
    assert cfg.methods == ["mssr"]


def test_spec_defaults_are_config_defaults() -> None:
    cfg = load_config(None, [])
    assert (cfg.replay.buffer_size, cfg.replay.lam, cfg.replay.interval_units) == (1024, 0.3, 3.0)
    assert (cfg.replay.loss_ema_decay, cfg.replay.loss_delta) == (0.9, 0.2)
    assert (cfg.replay.probe_size, cfg.replay.probe_drop) == (32, 2.0)
    m = cfg.mssr
    assert (m.k, m.c, m.alpha, m.gamma_d, m.s_min, m.s_max) == (10, 0.5, 0.01, 0.2, 1, 10)
    assert (m.eta_s, m.beta_s, m.rho, m.gamma_s, m.zeta) == (0.05, 0.5, 0.01, 1, 1)
    assert (m.eta_p, m.rho_p, m.lam0, m.lam_min, m.beta_r) == (0.5, 0.05, 0.3, 0.05, 1e-5)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["train.lrr=3"], "train.lrr: unknown key; allowed here: steps_per_task"),
        (["train.lr=abc"], "train.lr: Input should be a valid number"),
        (["modell.name_or_path=x"], "modell: unknown key"),
        (["methods=[fixed,mssr]"], "alternative replay methods"),
        (["methods=[multitask,fixed]"], "multitask is a reference run"),
        (["methods=[magic]"], "unknown ['magic']"),
        (["train.steps_per_task=null"], "exactly one of train.steps_per_task"),
        (["train.epochs_per_task=2"], "exactly one of train.steps_per_task"),
        (["model.finetune=half"], "model.finetune: Input should be 'lora' or 'full'"),
        (["train.batch_size=0"], "train.batch_size: Input should be greater than 0"),
        (["trainlr"], "expected key=value"),
        (["mssr.quantile_low=0.9", "mssr.quantile_high=0.5"], "quantile_low must be below"),
    ],
)
def test_bad_configs_name_the_key(overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert expected in str(err.value)


def test_bad_yaml_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(path)


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.batch_size=true", "train.batch_size"),
        ("train.progress=1", "train.progress"),
        ("train.lr=true", "train.lr"),
        ("train.steps_per_task=2.5", "train.steps_per_task"),
        ("model.name_or_path=123", "model.name_or_path"),
        ("seed=false", "seed"),
    ],
)
def test_types_are_strict(override: str, key: str) -> None:
    """A bool is no int and a number no string: YAML's `true` must not become batch size 1."""
    with pytest.raises(ConfigError, match=f"{key}: Input should be"):
        load_config(None, [override])


def test_ints_for_floats_and_exponent_floats_still_load(tmp_path: Path) -> None:
    cfg = load_config(None, ["train.lr=1", "train.weight_decay=0", "train.epochs_per_task=2",
                             "train.steps_per_task=null", "mssr.k=3"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs_per_task == 2.0
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  lr: 1e-4\n  warmup_ratio: 5E-2\nname: '2024'\n")
    cfg = load_config(path, ["replay.lam=3e-1"])
    assert cfg.train.lr == pytest.approx(1e-4) and cfg.train.warmup_ratio == pytest.approx(0.05)
    assert cfg.replay.lam == pytest.approx(0.3) and cfg.name == "2024"


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "configs").glob("*.yaml")) + [ROOT / "src/retain/configs/demo.yaml"],
    ids=lambda p: p.name,
)
def test_shipped_configs_load_under_strict_types(path: Path) -> None:
    assert load_config(path).name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("a/b", "path separator"),
        ("a\\b", "path separator"),
        ("..", "'.' or '..'"),
        (".", "'.' or '..'"),
        ("/tmp/x", "absolute path"),
    ],
)
def test_run_names_that_are_no_plain_directory_name_are_rejected(name: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"name='{name}'"])
    assert "name: " in str(err.value) and expected in str(err.value)


def test_config_differences_name_dotted_keys_and_skip_presentation() -> None:
    from retain.config import RESULT_NEUTRAL_KEYS, config_differences

    old = load_config(None, ["train.lr=1e-3", "train.progress=true", "train.log_every=1"])
    new = load_config(None, ["train.lr=2e-3", "train.progress=false", "train.log_every=5",
                             "model.lora.r=4"])
    diffs = config_differences(old.model_dump(mode="json"), new.model_dump(mode="json"))
    assert diffs == ["model.lora.r: 8 → 4", "train.lr: 0.001 → 0.002"]
    assert {"train.progress", "train.log_every"} <= RESULT_NEUTRAL_KEYS
    assert config_differences({"a": {"b": 1}}, {"a": {}}) == ["a.b: 1 → (absent)"]
