"""The other methods inside a plain `transformers.Trainer`, against `retain run`.

Bound and reason: the integration runs retain's own per-step code (the step planner with the
methods' batch composition, `train.step.micro_batch_loss` with their extra losses and loss
weighting, `train.step.end_step` with their `after_step`), so once the Trainer's
optimizer, schedule and clipping match retain's, nothing is left that could differ: the bound
is zero, for one method of each family (adaptive replay, a regulariser with a frozen teacher,
an adapter method that replaces the model's layers, general replay with its reserved rows and
targets computed from the model before the first task). A Trainer set up otherwise (another
optimizer, a linear schedule) trains differently by design, not by the integration.
"""

from __future__ import annotations

import pytest

from tests.integration_hf_helpers import (
    adapter_difference,
    examples_equal,
    retain_run,
    step_records,
    trainer_run,
)
from tests.test_gere_loop import general_source

BOUND = 0.0
"""Largest absolute difference of any exported adapter weight (see the module docstring)."""


@pytest.mark.parametrize("method", ["mssr", "lwf", "procl", "gere"])
def test_other_methods_through_the_trainer_stay_within_the_bound(tmp_path, method) -> None:
    extra = []
    if method == "gere":  # one general-text row in every step of two rows
        extra = [f"general.source={general_source(tmp_path)}", "general.size=8",
                 "general.max_tokens=48", "general.mixing=per_batch", "general.per_batch_rows=1"]
    cli = retain_run(tmp_path / "cli", method, 1, *extra).run_dir
    hf = trainer_run(tmp_path / "hf", method, 1, *extra).run_dir
    assert adapter_difference(cli, hf) <= BOUND
    assert (cli / "scores.csv").read_text() == (hf / "scores.csv").read_text()
    assert examples_equal(cli, hf)
    losses = [[r["losses"] for r in step_records(d)] for d in (cli, hf)]
    assert losses[0] == losses[1] and len(losses[0]) == 15
    if method == "lwf":  # the teacher's term is in the comparison
        assert any("lwf" in name for step in losses[1][12:] for name in step)
