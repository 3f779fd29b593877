"""Each paper's ordering of its methods, tested on a bench: reproduced, reversed or unresolved.

A method package declares what its paper reports (`MethodSpec.claims`: `mssr > mssr_spl`,
`olora ≈ seq_lora`). A bench that ran both sides of a claim judges it by the paired difference
`better − worse` on the primary score: same seeds, same test examples, the estimator of every
other difference of the bench (`aggregate._difference`). The claims of one paper are one
family, Holm-adjusted together. Verdicts:

- `>`: *reproduced* when the adjusted difference is significant and positive, *reversed* when
  significant and negative, else *unresolved* (the bench cannot tell the two apart);
- `≈`: *differ* when significant, else *no difference resolved* (an interval containing 0 is
  not evidence of equality; it may only be too wide).

A side the bench did not run is read from `sequential` where, under the bench's setting, it
is no method at all (`MethodSpec.plain_when`: `seq_lora` without the adapter MLP is the same
run as `sequential`); the claim then says so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from retain.eval.stats import ADJUST, ALPHA, Estimate
from retain.methods.spec import PaperClaim

if TYPE_CHECKING:
    from retain.config_sections import CoreConfig


@dataclass(frozen=True)
class ClaimResult:
    claim: PaperClaim
    difference: Estimate | None
    """`better − worse` on the primary score, `significant` Holm-adjusted within the paper."""
    verdict: str
    read_as: Mapping[str, str] | None = None
    """This claim's sides read from another method's runs (`{"seq_lora": "sequential"}`)."""

    @property
    def text(self) -> str:
        """The claim, with the stand-ins it was judged on."""
        notes = "; ".join(f"{k} = {v}: the same run here" for k, v in (self.read_as or {}).items())
        return self.claim.text + (f" ({notes})" if notes else "")


def stand_ins(
    methods: Sequence[str], config: CoreConfig | None, baseline: str
) -> dict[str, str]:
    """Methods not in `methods` that are the `baseline`'s run (`sequential`) under `config`, the
    bench's setting, where the bench ran the baseline: their claims are judged on its rows."""
    from retain.methods.names import catalogue

    if config is None or baseline not in methods:
        return {}
    lora = config.model.finetune == "lora"
    return {name: baseline for spec in catalogue() if spec.plain_when is not None
            for name in spec.names if name not in methods and (lora or not spec.needs_lora)
            and spec.plain_when(config, name)}  # fmt: skip


def paper_claims(
    methods: Sequence[str], read_as: Mapping[str, str] | None = None
) -> list[PaperClaim]:
    """The declared claims both of whose methods are among `methods` (or read as one of them,
    `read_as`), in catalogue order."""
    from retain.methods.names import catalogue

    present = set(methods) | set(read_as or {})
    return [c for spec in catalogue() for c in spec.claims
            if c.better in present and c.worse in present]  # fmt: skip


def verdict(claim: PaperClaim, diff: Estimate | None) -> str:
    if diff is None or diff.significant is None:
        return "not measured"
    if claim.relation == "≈":
        return "differ" if diff.significant else "no difference resolved"
    if not diff.significant:
        return "unresolved"
    return "reproduced" if diff.mean > 0 else "reversed"


def judge_claims(
    claims: Sequence[PaperClaim],
    difference: Callable[[str, str], Estimate | None],
    alpha: float = ALPHA,
    read_as: Mapping[str, str] | None = None,
) -> list[ClaimResult]:
    """Every claim's difference (`difference(better, worse)`, each side through `read_as`),
    Holm within each paper."""
    alias = dict(read_as or {})
    diffs = [difference(alias.get(c.better, c.better), alias.get(c.worse, c.worse))
             for c in claims]  # fmt: skip
    for paper in dict.fromkeys(c.paper for c in claims):
        mine = [i for i, c in enumerate(claims)
                if c.paper == paper and (d := diffs[i]) is not None and d.p is not None]
        adjusted = ADJUST["holm"]([diffs[i].p for i in mine])  # type: ignore[union-attr]
        for i, p_adj in zip(mine, adjusted, strict=True):
            d = diffs[i]
            assert d is not None
            diffs[i] = replace(d, significant=bool(p_adj < alpha), correction="holm")
    return [ClaimResult(c, d, verdict(c, d),
                        {k: alias[k] for k in (c.better, c.worse) if k in alias} or None)
            for c, d in zip(claims, diffs, strict=True)]  # fmt: skip
