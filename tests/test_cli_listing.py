"""`retain streams` and `retain config`: what a user reads before writing a config."""

from __future__ import annotations

from typer.testing import CliRunner

from retain.cli import app
from retain.config_reference import config_reference


def test_streams_lists_every_registered_stream_with_its_tasks() -> None:
    out = CliRunner().invoke(app, ["streams"])
    assert out.exit_code == 0, out.output
    for name in ("builtin", "olora-standard-1", "olora-long-4", "reasoning-5"):
        assert f"{name}:" in out.output
    builtin = out.output.split("builtin:")[1].split("\n\n")[0]
    assert "capital_lookup" in builtin and "loglik" in builtin and "exact_match" in builtin


def test_config_prints_the_generated_reference() -> None:
    out = CliRunner().invoke(app, ["config"])
    assert out.exit_code == 0
    assert out.output.strip() == config_reference().strip()
    for key in ("train.report_to", "eval.cells", "eval.loglik_norm", "data.stream"):
        assert key in out.output, key
