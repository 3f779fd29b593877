"""MSSR per-sample memory state: strength m, stability S, review time t*, loss EMA ℓ̃.

Each formula (docs/methods/mssr.md) is a pure function below so tests can check it by hand;
`MemoryState` applies them vectorised over NumPy arrays indexed by global sample id (no Python
loop per sample, no extra forward pass: losses come from the training step's own forward).
Times are in *units* (see schedule.py) on a run-wide clock that keeps increasing across tasks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from retain.methods.replay.config import MSSRConfig

NEUTRAL_LOSS = 0.5
"""ℓ̂ given to a sample whose loss was never observed, and to all when Q95 == Q05.

Decision: 0.5 is the midpoint of the normalised range, so φ = 0.5 with the defaults (c = 0.5):
neither easy nor hard."""

MIN_STRENGTH = 1e-12
"""Floor on m in the sampler so m^(−ζ) stays finite (m never gets that low in practice)."""


def ema_update(prev: np.ndarray, loss: np.ndarray, decay: float) -> np.ndarray:
    """ℓ̃ ← decay · ℓ̃ + (1 − decay) · ℓ."""
    return decay * prev + (1.0 - decay) * loss


def quantile_bounds(values: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """(Q_low, Q_high) of the tracked losses; linear interpolation as in `np.quantile`."""
    if values.size == 0:
        return 0.0, 0.0
    q = np.quantile(values, [low, high])
    return float(q[0]), float(q[1])


def normalise_loss(loss: np.ndarray, q_low: float, q_high: float) -> np.ndarray:
    """ℓ̂ = clip((ℓ̃ − Q05) / (Q95 − Q05), 0, 1); NEUTRAL_LOSS when the range is empty."""
    loss = np.asarray(loss, dtype=np.float64)
    width = q_high - q_low
    if not width > 1e-12:
        return np.full(loss.shape, NEUTRAL_LOSS)
    return np.clip((loss - q_low) / width, 0.0, 1.0)


def difficulty(l_hat: np.ndarray, k: float, c: float) -> np.ndarray:
    """φ(ℓ̂) = 1 / (1 + exp(−k (ℓ̂ − c)))."""
    return 1.0 / (1.0 + np.exp(-k * (np.asarray(l_hat, dtype=np.float64) - c)))


def hazard(phi: np.ndarray, stability: np.ndarray, alpha: float, gamma_d: float) -> np.ndarray:
    """h = (α + γ_d φ) / S: hard samples and unstable memories fade faster."""
    return (alpha + gamma_d * phi) / stability


def decay_strength(m: np.ndarray, h: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """m ← m · exp(−h Δ), Δ in units since m was last brought up to date."""
    return m * np.exp(-h * delta)


def review_stability(
    stability: np.ndarray,
    m_before: np.ndarray,
    dt: np.ndarray,
    eta_s: float,
    beta_s: float,
    rho: float,
    gamma_s: float,
    s_min: float,
    s_max: float,
) -> np.ndarray:
    """S ← clip(S + η_s (S_max − S)^β_s · exp(−ρ Δt) · (1 − m_before)^γ_s, S_min, S_max).

    A review strengthens S most when the memory had faded (small m_before) and the last review
    was recent (Δt small); S saturates at S_max.
    """
    gain = (
        eta_s
        * np.power(np.maximum(s_max - stability, 0.0), beta_s)
        * np.exp(-rho * dt)
        * np.power(np.maximum(1.0 - m_before, 0.0), gamma_s)
    )
    return np.clip(stability + gain, s_min, s_max)


def sampling_probabilities(m: np.ndarray, zeta: float) -> np.ndarray:
    """p_i ∝ m_i^(−ζ): weakest memories first; ζ = 0 is uniform.

    Decision (docs/methods/mssr.md): the paper also writes a rule with (1 − m)^β_m e^{ρΔt}
    whose β_m is never defined; we use m^(−ζ), the rule of its algorithm.
    """
    w = np.power(np.maximum(np.asarray(m, dtype=np.float64), MIN_STRENGTH), -zeta)
    return w / w.sum()


class MemoryState:
    """MSSR state arrays over global sample ids; only *tracked* ids (buffer + current task) count.

    Decisions (ours, the paper leaves them open):
    - A sample's state starts the first time it is in a batch (m = 1, S = 1, t* = now, and ℓ̃ =
      its first loss rather than 0, so the EMA is not biased low); a buffer sample never trained
      on starts when it enters the buffer, with no loss (ℓ̂ = NEUTRAL_LOSS).
    - A review is any later appearance in a batch: a replayed row, or a current-task sample
      seen again in a later epoch — the model rehearses it either way, so m must not keep
      decaying from its first exposure.
    - Decay is lazy: `refresh` decays every tracked sample from its own last-update time using
      the current φ and S; it runs at replay events, at task ends, and when `refresh_units`
      have passed. Reviewed rows are first decayed exactly to now (to get m_before).
    - Quantiles Q05/Q95 are recomputed over all tracked samples with a loss at every refresh and
      cached in between ("running quantiles").
    """

    def __init__(self, config: MSSRConfig, size: int = 0) -> None:
        self.config = config
        self.m = np.ones(size)
        self.s = np.ones(size)
        self.t_star = np.zeros(size)
        self.t_m = np.zeros(size)
        self.loss = np.zeros(size)
        self.has_loss = np.zeros(size, dtype=bool)
        self.started = np.zeros(size, dtype=bool)
        self.tracked = np.zeros(size, dtype=bool)
        self.q_low = 0.0
        self.q_high = 0.0
        self.last_refresh = 0.0

    @property
    def initial_stability(self) -> float:
        """S = 1 at the start (docs/methods/mssr.md), kept inside [S_min, S_max]."""
        return min(max(1.0, self.config.s_min), self.config.s_max)

    @property
    def size(self) -> int:
        return int(self.m.size)

    def ensure_size(self, size: int) -> None:
        """Grow the arrays if the sample store grew (new rows are untracked)."""
        extra = size - self.size
        if extra <= 0:
            return
        self.m = np.concatenate([self.m, np.ones(extra)])
        self.s = np.concatenate([self.s, np.ones(extra)])
        self.t_star = np.concatenate([self.t_star, np.zeros(extra)])
        self.t_m = np.concatenate([self.t_m, np.zeros(extra)])
        self.loss = np.concatenate([self.loss, np.zeros(extra)])
        for name in ("has_loss", "started", "tracked"):
            setattr(self, name, np.concatenate([getattr(self, name), np.zeros(extra, dtype=bool)]))

    def track(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size:
            self.ensure_size(int(ids.max()) + 1)
        self.tracked[ids] = True

    def untrack(self, ids: np.ndarray) -> None:
        """Forget samples (evicted, or current-task samples that did not enter the buffer)."""
        ids = np.asarray(ids, dtype=np.int64)
        self.tracked[ids] = False
        self.started[ids] = False
        self.has_loss[ids] = False
        self.m[ids] = 1.0
        self.s[ids] = self.initial_stability
        self.loss[ids] = 0.0

    def start(self, ids: np.ndarray, now: float) -> None:
        """Begin the state of tracked samples that have none yet (m = 1, S = 1, t* = now)."""
        ids = np.asarray(ids, dtype=np.int64)
        ids = ids[self.tracked[ids] & ~self.started[ids]]
        self.m[ids] = 1.0
        self.s[ids] = self.initial_stability
        self.t_star[ids] = now
        self.t_m[ids] = now
        self.started[ids] = True

    def difficulty_of(self, ids: np.ndarray) -> np.ndarray:
        """φ of samples from their ℓ̃ and the cached quantiles."""
        l_hat = normalise_loss(self.loss[ids], self.q_low, self.q_high)
        l_hat = np.where(self.has_loss[ids], l_hat, NEUTRAL_LOSS)
        return difficulty(l_hat, self.config.k, self.config.c)

    def _decay(self, ids: np.ndarray, now: float) -> None:
        cfg = self.config
        h = hazard(self.difficulty_of(ids), self.s[ids], cfg.alpha, cfg.gamma_d)
        delta = np.maximum(now - self.t_m[ids], 0.0)
        self.m[ids] = decay_strength(self.m[ids], h, delta)
        self.t_m[ids] = now

    def refresh(self, now: float) -> None:
        """Recompute the quantiles and decay every tracked sample up to `now` (vectorised)."""
        with_loss = self.tracked & self.has_loss
        self.q_low, self.q_high = quantile_bounds(
            self.loss[with_loss], self.config.quantile_low, self.config.quantile_high
        )
        self._decay(np.flatnonzero(self.tracked & self.started), now)
        self.last_refresh = now

    def refresh_due(self, now: float) -> bool:
        return now - self.last_refresh >= self.config.refresh_units

    def observe(self, ids: np.ndarray, losses: np.ndarray, now: float) -> None:
        """Rows of a trained batch: update ℓ̃; start new samples; review the ones seen before.

        Untracked ids (e.g. general-text rows of another plugin) are ignored.
        """
        cfg = self.config
        ids = np.asarray(ids, dtype=np.int64)
        losses = np.asarray(losses, dtype=np.float64)
        inside = ids < self.size
        ids, losses = ids[inside], losses[inside]
        keep = self.tracked[ids]
        ids, losses = ids[keep], losses[keep]
        if ids.size == 0:
            return
        had = self.has_loss[ids]
        self.loss[ids] = np.where(had, ema_update(self.loss[ids], losses, cfg.loss_ema), losses)
        self.has_loss[ids] = True

        seen = self.started[ids]
        old = ids[seen]
        if old.size:
            self._decay(old, now)
            m_before = self.m[old]
            self.s[old] = review_stability(
                self.s[old],
                m_before,
                np.maximum(now - self.t_star[old], 0.0),
                cfg.eta_s,
                cfg.beta_s,
                cfg.rho,
                cfg.gamma_s,
                cfg.s_min,
                cfg.s_max,
            )
            self.m[old] = 1.0
            self.t_star[old] = now
        self.start(ids[~seen], now)

    def probabilities(self, ids: np.ndarray) -> np.ndarray:
        """Sampler probabilities over `ids` (buffer positions), p ∝ m^(−ζ)."""
        return sampling_probabilities(self.m[np.asarray(ids, dtype=np.int64)], self.config.zeta)

    _ARRAYS = ("m", "s", "t_star", "t_m", "loss", "has_loss", "started", "tracked")

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {name: getattr(self, name).copy() for name in self._ARRAYS}
        state.update(q_low=self.q_low, q_high=self.q_high, last_refresh=self.last_refresh)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self._ARRAYS:
            dtype = bool if name in ("has_loss", "started", "tracked") else np.float64
            setattr(self, name, np.asarray(state[name], dtype=dtype).copy())
        self.q_low = float(state["q_low"])
        self.q_high = float(state["q_high"])
        self.last_refresh = float(state["last_refresh"])
