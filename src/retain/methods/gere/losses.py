"""GeRe's auxiliary losses on the replay rows and the weight `w` that scales them
(docs/methods/gere.md).

All take the replay rows' non-pad tokens flattened to [tokens, dim] (or [tokens, vocab]), in
the same order as the targets, and compute in fp32 whatever the forward's dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from retain.methods.gere.targets import NEGATIVE, NEUTRAL, POSITIVE

KL_TEMPERATURE = 2.0
EPS = 1e-8


def state_bounds(
    states: torch.Tensor, tau_pos: torch.Tensor, tau_neg: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The interval each element must stay in: positive [τ⁺, ∞), negative (−∞, τ⁻],
    neutral [τ⁻, τ⁺]. Then ℓ = relu(lo − a) + relu(a − hi) is the loss of each state
    (docs/methods/gere.md)
    (an infinite bound contributes an exact 0, with zero gradient)."""
    inf = torch.full_like(tau_pos, float("inf"))
    lows = torch.empty((3, tau_pos.numel()), dtype=torch.float32, device=tau_pos.device)
    highs = torch.empty_like(lows)
    lows[NEUTRAL], highs[NEUTRAL] = tau_neg, tau_pos
    lows[POSITIVE], highs[POSITIVE] = tau_pos, inf
    lows[NEGATIVE], highs[NEGATIVE] = -inf, tau_neg
    index = states.long()
    return lows.gather(0, index), highs.gather(0, index)


def tm_loss(
    hidden: torch.Tensor, states: torch.Tensor, tau_pos: torch.Tensor, tau_neg: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """L_TM = Σ ℓ / (#{ℓ ≠ 0} + 1e−8) over the given tokens, and the violation count.

    Normalised by the number of violating elements (as the reference): the mean size of a
    violation, exactly 0 when every activation is on its base side of the thresholds.
    """
    a = hidden.float()
    device = a.device
    lo, hi = state_bounds(states.to(device), tau_pos.to(device), tau_neg.to(device))
    per_element = torch.relu(lo - a) + torch.relu(a - hi)
    violations = (per_element != 0).sum()
    return per_element.sum() / (violations + EPS), violations


def feature_distance(hidden: torch.Tensor, base: torch.Tensor, power: int) -> torch.Tensor:
    """`l1` (power 1): mean |h − h⁰|; `l2` (power 2): mean (h − h⁰)², over tokens × dims."""
    diff = hidden.float() - base.float()
    return diff.abs().mean() if power == 1 else (diff * diff).mean()


def kl_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = KL_TEMPERATURE,
) -> torch.Tensor:
    """KL(p_base ‖ p_current) at temperature T on both sides (no T² factor), summed over the
    vocabulary, mean over tokens."""
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(-1).mean()


def topk_teacher(
    teacher_logits: torch.Tensor, k: int, temperature: float = KL_TEMPERATURE
) -> tuple[torch.Tensor, torch.Tensor]:
    """What a top-k teacher cache keeps: the k largest log-probabilities at T and their ids."""
    log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    values, ids = log_p.topk(min(k, log_p.shape[-1]), dim=-1)
    return values, ids


def kl_loss_topk(
    student_logits: torch.Tensor,
    teacher_log_probs: torch.Tensor,
    teacher_ids: torch.Tensor,
    temperature: float = KL_TEMPERATURE,
) -> torch.Tensor:
    """KL from a top-k teacher: the teacher's k ids plus one tail bucket (1 − Σ top-k) on each
    side, i.e. the exact KL between the two distributions coarsened to k + 1 outcomes."""
    scaled = student_logits.float() / temperature
    log_z = torch.logsumexp(scaled, dim=-1)
    ids = teacher_ids.long()
    log_q = scaled.gather(-1, ids) - log_z.unsqueeze(-1)
    log_p = teacher_log_probs.float()
    head = (log_p.exp() * (log_p - log_q)).sum(-1)
    if ids.shape[-1] >= scaled.shape[-1]:  # every id kept: no tail bucket
        return head.mean()
    p_tail = (1.0 - log_p.exp().sum(-1)).clamp(min=0.0)
    log_q_tail = torch.logsumexp(scaled.scatter(-1, ids, float("-inf")), dim=-1) - log_z
    tail = torch.xlogy(p_tail, p_tail) - p_tail * log_q_tail
    return (head + tail).mean()


def weighted(
    aux: torch.Tensor, ce: torch.Tensor, weight: float | str
) -> tuple[torch.Tensor, float]:
    """`w · L_aux` and w. `dy`: w = CE.detach() / (L_aux.detach() + 1e−8), so both terms have
    equal value; where L_aux = 0 the term is a constant 0 (no gradient, never NaN)."""
    if weight != "dy":
        w = float(weight)
        return aux * w, w
    value = float(aux.detach())
    if value == 0.0:
        return torch.zeros((), device=aux.device), 0.0
    w = float(ce.detach()) / (value + EPS)
    return aux * w, w


def token_mean(
    per_row: torch.Tensor, tokens: torch.Tensor, rows: torch.Tensor
) -> torch.Tensor | None:
    """Token-mean CE of the selected `rows` from per-row means and token counts; None if no
    row is selected."""
    if not bool(rows.any()):
        return None
    counts = tokens[rows]
    return (per_row[rows] * counts).sum() / counts.sum().clamp(min=1)


def paper_numerator(ce_general: torch.Tensor, ce_task: torch.Tensor | None) -> torch.Tensor:
    """What `dy` equates w·L_TM with in `gere_paper`: the micro-batch's CE as the reference
    code takes it, (CE_task + CE_general)/2 where it holds task rows, else CE_general."""
    return ce_general if ce_task is None else (ce_general + ce_task) / 2
