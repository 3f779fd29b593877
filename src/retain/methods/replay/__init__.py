"""Experience replay and MSSR: config, buffer, memory model, schedules and the plugin that joins
them (docs/methods/replay.md). This file declares the methods and imports only their config, so
that `retain.config` can read it without pulling in the plugin."""

from __future__ import annotations

from typing import TYPE_CHECKING

from retain.methods.replay.config import MSSRConfig, ReplayConfig
from retain.methods.spec import MethodSpec, PaperClaim

if TYPE_CHECKING:
    from retain.config_sections import CoreConfig
    from retain.methods.base import Plugin


def build(config: CoreConfig, method: str) -> Plugin | None:
    from retain.methods.replay.plugin import build_replay_plugin

    return build_replay_plugin(config, method)


METHODS = (
    MethodSpec(
        names=("fixed", "loss_triggered", "accuracy_triggered"),
        family="replay",
        build=build,
        sections={"replay": ReplayConfig},
        summary="replay baselines",
    ),
    MethodSpec(
        names=("mssr_spl", "mssr_sch", "mssr"),
        family="replay",
        build=build,
        sections={"replay": ReplayConfig, "mssr": MSSRConfig},
        summary="memory-aware adaptive replay (sampler, schedule, both)",
        claims=tuple(
            PaperClaim(better, worse, "MSSR")  # each step of its ladder, and the headline
            for better, worse in (
                ("mssr", "fixed"),
                ("mssr", "mssr_spl"), ("mssr", "mssr_sch"),
                ("mssr_spl", "accuracy_triggered"), ("mssr_sch", "accuracy_triggered"),
                ("accuracy_triggered", "loss_triggered"), ("loss_triggered", "fixed"),
                ("fixed", "sequential"),
            )
        ),  # fmt: skip
    ),
)
