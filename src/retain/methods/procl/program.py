"""The math of one ProCL-wrapped LoRA factor (docs/methods/procl.md): routing, executing
weight, consolidation.

A factor `W ∈ R^{R×d}` (PEFT's out × in layout) is the program memory `M`, read as `N`
contiguous row slots `P_n ∈ R^{(R/N)×d}`. A router turns the factor's input, mean-pooled over
real tokens, into one query per head `h` (a head is a row block of the output); the heads attend
over the slots with per-head keys; the attention is averaged over the batch and gated per slot:

    α_{h,n} = mean_b softmax_n(q_{b,h}·K_{h,n} / τ) · σ(s_n)
    W_exec[h] = σ(g) · W_orig[h] + Σ_n α_{h,n} P_n

After every optimizer step `M ← c·M + (1 − c)·T`, with `T` the detached `W_exec` of the step's
last training forward. At inference the factor is `M`: plain LoRA.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Routing = Literal["learned", "random", "uniform"]
KEY_INIT_SCALE = 0.01
"""Keys start at `0.01·randn` (docs/methods/procl.md), so the first routing is close to uniform."""
GAMMA_LOGIT_LIMIT = 10.0


def pooling_weights(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Per-row weights (batch, seq) of the masked mean: 1/(real tokens) on real tokens, else 0.
    A row without any real token gets zeros (it pools to zeros, no division by zero)."""
    m = mask.to(dtype=dtype)
    return m / m.sum(dim=1, keepdim=True).clamp(min=1.0)


def pool(x: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """`x` (batch, seq, d) pooled over the sequence with `pooling_weights` (None: plain mean)."""
    if x.dim() != 3:
        raise ValueError(
            f"ProCL routing expects (batch, seq, features) inputs, got {tuple(x.shape)}"
        )
    if weights is None:
        return x.mean(dim=1)
    if tuple(weights.shape) != tuple(x.shape[:2]):
        raise ValueError(
            f"attention mask of shape {tuple(weights.shape)} does not match the factor's input "
            f"{tuple(x.shape)}; ProCL needs the mask of the batch being trained"
        )
    return torch.bmm(weights.to(x.dtype).unsqueeze(1), x).squeeze(1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of `x` (batch, seq, d) over the sequence, real tokens only.

    Decision (docs/methods/procl.md): pooling skips padding, unlike the reference, where pad
    states can dominate a left-padded batch. Without a mask every position counts.
    """
    return pool(x, None if mask is None else pooling_weights(mask, x.dtype))


def gamma_logit(w_orig: torch.Tensor) -> float:
    """`g` at the start of a task: clip(−log RMS(W_orig), −10, 10), so γ = σ(g) starts near 1
    for a small carried factor and near ½ for one of unit scale."""
    rms = float(w_orig.detach().float().pow(2).mean().sqrt())
    value = -math.log(max(rms, 1e-30))
    return max(-GAMMA_LOGIT_LIMIT, min(GAMMA_LOGIT_LIMIT, value))


def executing_weight(
    memory: torch.Tensor, alpha: torch.Tensor, w_orig: torch.Tensor, gamma: torch.Tensor | float
) -> torch.Tensor:
    """`W_exec = γ·W_orig + Σ_n α_{h,n} P_n`, row block h by row block h."""
    rows, d = memory.shape
    slots = alpha.shape[1]
    # row block h of the result is Σ_n α_{h,n} P_n: one (heads × slots) @ (slots × rows/N·d)
    delta = (alpha.to(memory.dtype) @ memory.reshape(slots, -1)).view(rows, d)
    return gamma * w_orig + delta


@torch.no_grad()
def consolidate(memory: torch.Tensor, target: torch.Tensor, c: float) -> None:
    """`M ← c·M_updated + (1 − c)·T` in place (M after the optimizer step, T before it)."""
    memory.mul_(c).add_(target.to(memory.dtype), alpha=1.0 - c)


def dirichlet_rows(shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """Rows drawn uniformly from the probability simplex (Dirichlet(1,…,1)): the random-routing
    ablation draws weights that sum to 1 per head like a softmax does."""
    u = torch.rand(shape, generator=generator, dtype=torch.float64).clamp(min=1e-12)
    e = -torch.log(u)
    return (e / e.sum(dim=-1, keepdim=True)).float()


class Router(nn.Module):
    """`Linear(d, d_k) → tanh → Linear(d_k, N·d_k)`: one query per head from the pooled input."""

    def __init__(self, d: int, key_dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.key_dim = heads, key_dim
        self.inp = nn.Linear(d, key_dim)
        self.out = nn.Linear(key_dim, heads * key_dim)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        q = self.out(torch.tanh(self.inp(pooled)))
        return q.view(pooled.shape[0], self.heads, self.key_dim)


class AdapterMLP(nn.Module):
    """The reference code's `R → hidden → R` ReLU MLP after a factor (not residual)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(y)))

    @torch.no_grad()
    def reset(self, generator: torch.Generator) -> None:
        """Kaiming-uniform (ReLU) weights and zero biases, as the reference initialises it."""
        for layer in (self.fc1, self.fc2):
            layer.weight.copy_(_kaiming(layer.weight.shape, generator, 0.0, "relu"))
            layer.bias.zero_()


def _kaiming(
    shape: torch.Size, generator: torch.Generator, a: float, nonlinearity: str
) -> torch.Tensor:
    """A Kaiming-uniform draw made on the CPU generator (copied to any device afterwards)."""
    out = torch.empty(shape)
    nn.init.kaiming_uniform_(out, a=a, nonlinearity=nonlinearity, generator=generator)
    return out


@torch.no_grad()
def _reset_linear(layer: nn.Linear, generator: torch.Generator) -> None:
    """`nn.Linear`'s own initialisation, drawn from `generator` (so it is reproducible)."""
    layer.weight.copy_(_kaiming(layer.weight.shape, generator, math.sqrt(5), "leaky_relu"))
    bound = 1.0 / math.sqrt(layer.in_features)
    layer.bias.copy_(torch.rand(layer.bias.shape, generator=generator) * 2 * bound - bound)


class FactorProgram(nn.Module):
    """Router, keys, slot gates, γ logit, the frozen `W_orig` and the optional MLP of one factor.

    It holds no copy of `M`: the factor's own LoRA weight is the memory, passed in by the layer
    that wraps it (so PEFT saves and merges it as an ordinary LoRA factor).
    """

    def __init__(
        self,
        rows: int,
        d: int,
        slots: int,
        key_dim: int,
        temperature: float,
        programs: bool,
        mlp_hidden: int | None,
        dtype: torch.dtype = torch.float32,
        gate_init: float = 0.0,
    ) -> None:
        super().__init__()
        if programs and rows % slots:
            raise ValueError(f"{rows} rows cannot be split into {slots} equal slots")
        self.rows, self.d, self.slots, self.temperature = rows, d, slots, temperature
        self.gate_init = gate_init
        self.router: Router | None = None
        if programs:
            self.router = Router(d, key_dim, slots).to(dtype)
            self.keys = nn.Parameter(torch.zeros(slots, slots, key_dim, dtype=dtype))
            self.gates = nn.Parameter(torch.full((slots,), gate_init, dtype=dtype))
            # shape (1,), not a 0-d scalar: the multi-process state digest views tensors as bytes
            self.gamma_logit = nn.Parameter(torch.zeros(1, dtype=dtype))
            self.register_buffer("w_orig", torch.zeros(rows, d, dtype=dtype))
        self.mlp = AdapterMLP(rows, mlp_hidden).to(dtype) if mlp_hidden else None
        # switched per task by the plugin
        self.active = False  # routing on (training forwards from task 2 on)
        self.mlp_active = False
        self.routing: Routing = "learned"
        self.fixed_gamma: float | None = None  # no_w_orig: γ = 0
        self.record = True  # keep T for consolidation
        self.consolidation = 0.1  # c of `consolidate` (procl.consolidation)
        self.each_forward = False  # consolidate before every training forward (micro_batch)
        self.pending: torch.Tensor | None = None

    @property
    def has_programs(self) -> bool:
        return self.router is not None

    # ------------------------------------------------------------------ routing
    def attention(self, pooled: torch.Tensor) -> torch.Tensor:
        """`softmax_n(q_{b,h}·K_{h,n} / τ)`, shape (batch, heads, slots); dense, no top-k."""
        assert self.router is not None
        q = self.router(pooled)
        # q_{b,h} · K_{h,n} for every b, h, n: (b, h, 1, k) @ (h, k, n)
        scores = (q.unsqueeze(-2) @ self.keys.transpose(-1, -2)).squeeze(-2) / self.temperature
        return torch.softmax(scores, dim=-1)

    def alpha(
        self,
        x: torch.Tensor,
        pooling: torch.Tensor | None,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """α (heads × slots): batch-averaged attention (or the ablation's draw) times σ(s).
        `pooling`: the batch's `pooling_weights` (None: every position counts)."""
        n = self.slots
        if self.routing == "learned":
            weights = self.attention(pool(x, pooling)).mean(dim=0)
        elif self.routing == "uniform":
            weights = torch.full((n, n), 1.0 / n, device=x.device, dtype=self.gates.dtype)
        else:
            if generator is None:
                raise RuntimeError("random routing needs the step's generator")
            weights = dirichlet_rows((n, n), generator).to(device=x.device, dtype=self.gates.dtype)
        return weights * torch.sigmoid(self.gates).unsqueeze(0)

    def gamma(self) -> torch.Tensor | float:
        if self.fixed_gamma is not None:
            return self.fixed_gamma
        return torch.sigmoid(self.gamma_logit)

    def executing(
        self,
        memory: torch.Tensor,
        x: torch.Tensor,
        pooling: torch.Tensor | None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        alpha = self.alpha(x, pooling, generator)
        return executing_weight(memory, alpha, self.w_orig, self.gamma())

    # ------------------------------------------------------------------ per task
    @torch.no_grad()
    def reset(self, memory: torch.Tensor, generator: torch.Generator) -> None:
        """Start of a task from task 2 on: W_orig ← the carried factor, fresh router, keys,
        gates (s = `gate_init`), γ logit from the new W_orig, and a fresh MLP."""
        if self.router is not None:
            self.w_orig.copy_(memory.detach())
            _reset_linear(self.router.inp, generator)
            _reset_linear(self.router.out, generator)
            self.keys.copy_(torch.randn(self.keys.shape, generator=generator) * KEY_INIT_SCALE)
            self.gates.fill_(self.gate_init)
            self.gamma_logit.fill_(gamma_logit(self.w_orig))
        if self.mlp is not None:
            self.mlp.reset(generator)
        self.pending = None
