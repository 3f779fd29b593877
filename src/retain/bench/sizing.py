"""How many seeds and test examples a bench needs to resolve a difference Δ: `retain size`.

A pilot bench of ≥ 2 seeds on shared test examples gives, for each method's paired difference
against `sequential` on the primary score, the variance components of `eval/stats.py`:
σ²_seed, σ²_ex/n₀ and σ²_seed×example/n₀ at its n₀ examples per task. Pooled over the methods,
they predict the variance at k seeds and n examples per task,

    Var(k, n) = σ²_seed / k + σ²_ex / n + σ²_sx / (k n),

and the power of the two-sided t test at the Holm level for the pilot's m methods (its most
stringent step, α/m, so every method's test reaches it): power ≈ P(T_df > t_{1−α/(2m)}(df) − Δ/SE),
df by Satterthwaite as in `stats.estimate`. The CPU time of a plan scales the pilot's own runs:
training as measured, evaluation in proportion to n / n₀.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from retain.bench.aggregate import BASELINE, PRIMARY, BenchSummary, load_bench, summarise
from retain.bench.plan import REFERENCES
from retain.eval.stats import ALPHA, t_pvalue, t_quantile

SEEDS = (2, 3, 4, 5, 6, 8, 10, 15, 20, 30)
N_MAX = 100_000


@dataclass(frozen=True)
class Components:
    """Variance components per unit: σ²_seed, σ²_ex (one example per task), σ²_sx (ditto)."""

    seed: float
    example: float
    interaction: float
    tasks: int

    def variance(self, k: int, n: int) -> float:
        return self.seed / k + self.example / n + self.interaction / (k * n)

    def df(self, k: int, n: int) -> float:
        """Satterthwaite df of `stats.estimate`: the spread over seeds (seed and flips, k − 1
        df) and the example term (Σ(m − 1) over the half strata)."""
        spread, example = (self.seed + self.interaction / n) / k, self.example / n
        df_ex = max(1.0, self.tasks * (n - 2.0))
        parts = (spread**2 / (k - 1) if k > 1 else 0.0) + example**2 / df_ex
        return (spread + example) ** 2 / parts if parts > 0 else df_ex


def power(c: Components, k: int, n: int, delta: float, alpha: float) -> float:
    """Power of the two-sided t test at level `alpha`: P(T_df > q − Δ/SE), a shifted central
    t (close to the noncentral t at these sizes, and unlike a normal it keeps the few df of
    the seed term in the power as well as in the critical value q)."""
    se = math.sqrt(c.variance(k, n))
    if se == 0:
        return 1.0
    df = max(1.0, c.df(k, n))
    x = t_quantile(1.0 - alpha, df) - abs(delta) / se
    tail = 0.5 * t_pvalue(x, df)  # P(T > |x|)
    return tail if x >= 0 else 1.0 - tail


def smallest_n(
    c: Components, k: int, delta: float, alpha: float, target: float = 0.8
) -> int | None:
    """The fewest test examples per task (≥ 2) reaching `target` power at k seeds, or None
    when no n up to N_MAX does. A scan (2 % steps, then one by one), not a bisection: power
    need not grow with n, since the Satterthwaite df falls towards k − 1 as the seed term
    takes over."""
    prev, n = 1, 2
    while n <= N_MAX:
        if power(c, k, n, delta, alpha) >= target:
            return next(m for m in range(prev + 1, n + 1)
                        if power(c, k, m, delta, alpha) >= target)  # fmt: skip
        prev, n = n, max(n + 1, math.ceil(n * 1.02))
    return None


def pilot_components(
    summary: BenchSummary, metric: str = PRIMARY
) -> tuple[Components, int, list[str]]:
    """Components pooled (averaged) over the methods' differences against sequential, per
    unit, the pilot's examples per task n₀, and the methods they came from. A pilot of the
    references alone (sequential and multitask, the usual first pilot of a stream) gives
    multitask's difference: a stand-in for a method's, said in the output."""
    n0 = _examples_per_task(summary)

    def components(names: list[str]) -> list[tuple[str, tuple[float, float, float]]]:
        return [(m, d.components) for m in names
                if (d := summary.differences.get(m, {}).get(metric)) is not None
                and d.components]  # fmt: skip

    found = components([m for m in summary.differences if m not in REFERENCES])
    found = found or components([m for m in summary.differences if m in REFERENCES])
    if not found:
        raise ValueError(
            f"the pilot has no variance components for {metric} against {BASELINE}: it needs "
            "≥ 2 seeds of sequential and of at least one method, scored on the same test "
            "examples (examples.npz)"
        )
    seed, ex, sx = (sum(c[j] for _, c in found) / len(found) for j in range(3))
    tasks = len(next(iter(summary.runs.values())).tasks)
    return Components(max(0.0, seed), ex * n0, sx * n0, tasks), n0, [m for m, _ in found]


def _examples_per_task(summary: BenchSummary) -> int:
    run = next(iter(summary.runs.values()))
    if run.examples is None:
        raise ValueError(f"{run.dir}: no examples.npz, the pilot's examples are unknown")
    counts = [run.examples.n_examples(t) for t in run.tasks]
    return round(len(counts) / sum(1.0 / max(c, 1) for c in counts))


@dataclass(frozen=True)
class RunCost:
    """The pilot's mean CPU (or wall-clock) seconds per run, split into train and eval."""

    seconds: float
    eval_share: float
    clock: str

    def per_run(self, n: int, n0: int) -> float:
        return self.seconds * ((1.0 - self.eval_share) + self.eval_share * n / n0)


def pilot_cost(summary: BenchSummary) -> RunCost | None:
    cpu, wall, share = [], [], []
    for run in summary.runs.values():
        cost = run.metrics.get("cost") or {}
        train, ev = cost.get("train_seconds"), cost.get("eval_seconds")
        if isinstance(train, int | float) and isinstance(ev, int | float) and train + ev > 0:
            wall.append(float(train + ev))
            share.append(float(ev) / float(train + ev))
        if isinstance(cost.get("cpu_seconds"), int | float):
            cpu.append(float(cost["cpu_seconds"]))
    if not share:
        return None
    use_cpu = len(cpu) == len(summary.runs)
    times = cpu if use_cpu else wall
    return RunCost(sum(times) / len(times), sum(share) / len(share), "CPU" if use_cpu else "wall")


def size_lines(
    root: Path,
    delta: float,
    target: float = 0.8,
    metric: str = PRIMARY,
    planned: int | None = None,
) -> list[str]:
    """What `retain size` prints for the pilot bench at `root`; `planned`: the methods the
    planned bench compares with sequential (Holm's m and the run count), default the pilot's."""
    methods, seeds, runs = load_bench(root)
    if len(seeds) < 2 or len({s for _, s in runs}) < 2:
        raise ValueError(f"{root}: a pilot of ≥ 2 seeds is needed to estimate the seed variance")
    summary = summarise(methods, seeds, runs)
    comps, n0, sources = pilot_components(summary, metric)
    references = sum(1 for x in methods if x in REFERENCES)
    m = planned if planned is not None else max(1, len(methods) - references)
    alpha = ALPHA / m
    cost = pilot_cost(summary)
    lines = [
        f"pilot {root}: {len(seeds)} seeds, {comps.tasks} tasks × {n0} test examples, "
        f"{m} method(s) against {BASELINE}" + (" (planned)" if planned is not None else ""),
        f"variance components of {metric} differences (points², from "
        f"{', '.join(s + ' − ' + BASELINE for s in sources)}): seed {comps.seed:.3g}, "
        f"example {comps.example / n0:.3g} and seed×example {comps.interaction / n0:.3g} at "
        f"n = {n0}",
        f"to resolve Δ = {delta:g} points at {target:.0%} power, two-sided, Holm level "
        f"{alpha:.3g} (0.05 / {m} methods):",
        f"{'seeds':>6}{'examples/task':>15}{'power':>8}{'runs':>6}"
        + (f"{cost.clock + ' hours':>12}" if cost else ""),
    ]
    for k in SEEDS:
        n = smallest_n(comps, k, delta, alpha, target)
        if n is None:
            lines.append(f"{k:>6}{'unreachable':>15}")
            continue
        n_runs = (m + references) * k
        row = f"{k:>6}{n:>15}{power(comps, k, n, delta, alpha):>8.2f}{n_runs:>6}"
        if cost:
            row += f"{n_runs * cost.per_run(n, n0) / 3600:>12.1f}"
        lines.append(row)
    lines.append("(power from a shifted t; examples/task: each task's test set)")
    return lines
