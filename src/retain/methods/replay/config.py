"""Configuration of the replay buffer, the replay baselines' triggers and MSSR
(docs/methods/replay.md, fixed.md, loss_triggered.md, accuracy_triggered.md, mssr.md)."""

from __future__ import annotations

from pydantic import Field, model_validator

from retain.config_base import Section


class ReplayConfig(Section):
    """Replay buffer and event settings; defaults from docs/methods/replay.md."""

    buffer_size: int = Field(1024, gt=0)
    lam: float = Field(0.3, gt=0, le=1, description="replay fraction λ of a replay step")
    unit_steps: int | None = Field(None, gt=0, description="steps per unit; None: 5% of the task")
    unit_fraction: float = Field(0.05, gt=0, le=1)
    interval_units: float = Field(
        3.0, ge=0, description="fixed: units between events; 0: every step"
    )
    event_units: float = Field(1.0, gt=0)
    loss_ema_decay: float = Field(0.9, gt=0, lt=1)
    loss_delta: float = Field(0.2, ge=0)
    probe_every_units: float = Field(1.0, gt=0)
    probe_size: int = Field(32, gt=0)
    probe_drop: float = Field(2.0, ge=0)


class MSSRConfig(Section):
    """MSSR memory model, sampler and schedule; defaults from docs/methods/mssr.md."""

    loss_ema: float = Field(0.95, gt=0, lt=1)
    quantile_low: float = Field(0.05, ge=0, lt=1)
    quantile_high: float = Field(0.95, gt=0, le=1)
    k: float = 10.0
    c: float = 0.5
    alpha: float = Field(0.01, ge=0)
    gamma_d: float = Field(0.2, ge=0)
    s_min: float = Field(1.0, gt=0)
    s_max: float = Field(10.0, gt=0)
    eta_s: float = Field(0.05, ge=0)
    beta_s: float = Field(0.5, ge=0)
    rho: float = Field(0.01, ge=0)
    gamma_s: float = Field(1.0, ge=0)
    zeta: float = Field(1.0, ge=0)
    refresh_units: float = Field(10.0, gt=0)
    eta_p: float = Field(0.5, ge=0)
    rho_p: float = Field(0.05, ge=0)
    first_interval_units: float = Field(1.0, gt=0)
    lam0: float = Field(0.3, gt=0, le=1)
    lam_min: float = Field(0.05, ge=0, le=1)
    beta_r: float = Field(1e-5, ge=0)

    @model_validator(mode="after")
    def _ordered_bounds(self) -> MSSRConfig:
        if self.quantile_low >= self.quantile_high:
            raise ValueError("mssr.quantile_low must be below mssr.quantile_high")
        if self.s_min > self.s_max:
            raise ValueError("mssr.s_min must not exceed mssr.s_max")
        return self
