"""GeRe: general-sample replay with the threshold-margin loss (docs/methods/gere.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from retain.methods.gere.config import GeneralReplayConfig
from retain.methods.spec import MethodSpec, PaperClaim

if TYPE_CHECKING:
    from retain.config_sections import CoreConfig
    from retain.methods.base import Plugin


def build(config: CoreConfig, method: str) -> Plugin | None:
    from retain.methods.gere.plugin import GeneralReplayPlugin

    return GeneralReplayPlugin(config, method)


METHODS = (
    MethodSpec(
        names=("gere", "gere_lm", "gere_kl", "gere_l1", "gere_l2", "gere_paper"),
        family="general replay",
        build=build,
        sections={"general": GeneralReplayConfig},
        summary="`gere` takes `general.loss` (default `tm`, the method); `gere_<loss>` fixes "
        "the loss, for the paper's comparison baselines; `gere_paper` weights TM as the "
        "reference code does (concat, w = dy over the micro-batch's mean CE, per micro-batch)",
        claims=tuple(
            PaperClaim("gere", baseline, "GeRe")
            for baseline in ("gere_lm", "gere_kl", "gere_l1", "gere_l2")
        ),
    ),
)
