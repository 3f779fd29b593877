"""The diagonal empirical Fisher and the EWC penalty (docs/methods/ewc.md).

Decision (as Avalanche computes it): the Fisher of a finished task is the mean over its
training mini-batches of the squared gradient of the mini-batch's mean loss, on the parameters
that train (the adapter's under LoRA methods), not a per-example Fisher: one backward per
mini-batch. Gradients are taken with `torch.autograd.grad` through the model without its
distributed wrapper, so no `.grad` is touched and no gradient is averaged across processes
(a square of a mean is not a mean of squares); each process takes every `world`-th mini-batch
and the sums are added across processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from retain.data.encoding import Batch


def empirical_fisher(
    params: dict[str, torch.nn.Parameter],
    batches: Iterable[Batch],
    loss_of: Callable[[Batch], torch.Tensor],
    reduce: Callable[[list[torch.Tensor]], list[torch.Tensor]] = lambda t: t,
) -> dict[str, torch.Tensor]:
    """Mean over `batches` of the squared gradient of `loss_of(batch)` w.r.t. `params` (a
    parameter without a gradient in a batch counts 0); `reduce` sums over processes."""
    names = list(params)
    sums = [torch.zeros_like(p, dtype=torch.float32) for p in params.values()]
    count = torch.zeros(1, dtype=torch.float32, device=sums[0].device if sums else "cpu")
    for batch in batches:
        loss = loss_of(batch)
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        for total, grad in zip(sums, grads, strict=True):
            if grad is not None:
                total += grad.detach().float() ** 2
        count += 1
    *sums, count = reduce([*sums, count])
    n = max(float(count.item()), 1.0)
    return {name: total / n for name, total in zip(names, sums, strict=True)}


def penalty(
    params: dict[str, torch.nn.Parameter],
    consolidated: list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]],
) -> torch.Tensor:
    """Σ over (Fisher, anchor) pairs of Σ_i F_i (θ_i − θ*_i)², over the names both hold."""
    total: torch.Tensor | None = None
    for fisher, anchor in consolidated:
        for name, f in fisher.items():
            p = params.get(name)
            if p is None:
                continue
            term = (f * (p.float() - anchor[name]) ** 2).sum()
            total = term if total is None else total + term
    if total is None:
        device = next(iter(params.values())).device if params else torch.device("cpu")
        return torch.zeros((), device=device)
    return total
