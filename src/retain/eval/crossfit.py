"""Cross-fitted max-based metrics: forgetting without the upward bias of a max over noise.

`forgetting_max`, `forgetting_first` and `normalized_avg` take, per task, the best of several
noisy stage scores and subtract (or divide by) the last one. The max of noisy scores exceeds the
max of the true scores, so the papers' plug-in value is biased upward, by about 10 points at 15
tasks × 8 examples (docs/statistics.md). Cross-fitting removes that: each task's examples are
split into two halves (even and odd positions, fixed so every run and seed splits alike); the
best stage is chosen on one half and scored on the other, then the halves swap and the two
values are averaged (for `normalized_avg`, whose halves can score near 0: the pooled final
score over the pooled cross-scored best, a ratio that stays stable). The example bootstrap
resamples within each half (`stratified_draw`), so a resample keeps the split. The cross-fit
is slightly biased downward when stages score alike (the stage picked on one half is not
always the best): about −0.5 points in the coverage simulation."""

from __future__ import annotations

import numpy as np

XFIT_METRICS: tuple[str, ...] = (
    "forgetting_max_xfit", "forgetting_first_xfit", "normalized_avg_xfit",
)  # fmt: skip
"""The cross-fitted counterparts of the papers' max-based metrics (same names without
`_xfit`), the headline values wherever per-example results exist."""

PLUGIN_OF = {x: x.removesuffix("_xfit") for x in XFIT_METRICS}
PLUGIN_MAX: tuple[str, ...] = tuple(PLUGIN_OF.values())
"""The papers' definitions: shown beside the cross-fit as point values only (no interval, no
test), labelled as biased upward at small n."""


def strata_sizes(n: int) -> list[int]:
    """Sizes of the two resampling strata (halves) of a column of n examples."""
    return [(n + 1) // 2, n // 2] if n >= 2 else [n]


def stratified_draw(rng: np.random.Generator, n: int, batch: int) -> np.ndarray:
    """[batch, n] bootstrap indices; even positions drawn from even examples and odd from odd,
    so resample position p stays in the half of example p."""
    if n < 2:
        return rng.integers(0, n, size=(batch, n))
    even, odd = np.arange(0, n, 2), np.arange(1, n, 2)
    out = np.empty((batch, n), dtype=np.int64)
    out[:, 0::2] = even[rng.integers(0, even.size, size=(batch, even.size))]
    out[:, 1::2] = odd[rng.integers(0, odd.size, size=(batch, odd.size))]
    return out


def _pick(R: np.ndarray, rows: np.ndarray, col: int, choose: np.ndarray) -> np.ndarray:
    """R[b, rows[choose[b]], col] for every b of the batch."""
    return R[np.arange(R.shape[0]), rows[choose], col]


def crossfit_metrics(
    RA: np.ndarray, RB: np.ndarray, present: np.ndarray, n: int
) -> dict[str, np.ndarray]:
    """The `XFIT_METRICS` on batches of half matrices RA, RB ([batch, T+1, T], scores of each
    task's even / odd examples) of a stream prefix of n tasks; `present` marks scored cells."""
    out: dict[str, np.ndarray] = {}
    if n >= 2:
        terms = []
        for j in range(1, n):
            rows = np.arange(j, n)
            a = RA[:, rows, j - 1].argmax(axis=1)
            b = RB[:, rows, j - 1].argmax(axis=1)
            on_b = _pick(RB, rows, j - 1, a) - RB[:, n, j - 1]
            on_a = _pick(RA, rows, j - 1, b) - RA[:, n, j - 1]
            terms.append(0.5 * (on_a + on_b))
        out["forgetting_max_xfit"] = np.mean(np.stack(terms), axis=0)
        out["forgetting_first_xfit"] = terms[0]
    if present[n, :n].all():
        ratios = []
        for i in range(n):
            rows = np.flatnonzero(present[: n + 1, i])
            best = _pick(RB, rows, i, RA[:, rows, i].argmax(axis=1)) + _pick(
                RA, rows, i, RB[:, rows, i].argmax(axis=1)
            )  # each half's best stage, scored on the other half
            final = RA[:, n, i] + RB[:, n, i]
            with np.errstate(invalid="ignore", divide="ignore"):  # a ratio of the pooled halves:
                ratios.append(np.where(best > 0, final / best, np.nan))  # stable near 0
        out["normalized_avg_xfit"] = _nanmean(np.stack(ratios))
    return out


def _nanmean(x: np.ndarray) -> np.ndarray:
    """Mean over axis 0 of the defined values; NaN where none is."""
    count = np.isfinite(x).sum(axis=0)
    total = np.where(np.isfinite(x), x, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)
