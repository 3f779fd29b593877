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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from retain.eval.stats import ADJUST, ALPHA, Estimate
from retain.methods.spec import PaperClaim


@dataclass(frozen=True)
class ClaimResult:
    claim: PaperClaim
    difference: Estimate | None
    """`better − worse` on the primary score, `significant` Holm-adjusted within the paper."""
    verdict: str


def paper_claims(methods: Sequence[str]) -> list[PaperClaim]:
    """The declared claims both of whose methods are among `methods`, in catalogue order."""
    from retain.methods.names import catalogue

    present = set(methods)
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
) -> list[ClaimResult]:
    """Every claim's difference (`difference(better, worse)`), Holm within each paper."""
    diffs = [difference(c.better, c.worse) for c in claims]
    for paper in dict.fromkeys(c.paper for c in claims):
        mine = [i for i, c in enumerate(claims)
                if c.paper == paper and (d := diffs[i]) is not None and d.p is not None]
        adjusted = ADJUST["holm"]([diffs[i].p for i in mine])  # type: ignore[union-attr]
        for i, p_adj in zip(mine, adjusted, strict=True):
            d = diffs[i]
            assert d is not None
            diffs[i] = replace(d, significant=bool(p_adj < alpha), correction="holm")
    return [ClaimResult(c, d, verdict(c, d)) for c, d in zip(claims, diffs, strict=True)]
