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
