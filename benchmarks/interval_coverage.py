"""Do retain's intervals cover, and can its tests detect? A simulation that calls the library.

Score matrices are simulated with the structure of the stored benches: a probit model in which
an answer is right when μ[t, i] + a_s + B_e + U_se + W_ste > 0, with example difficulty B
shared by stages, seeds and methods, a per-seed-and-example term U (70 % agreement between
seeds) and a per-stage term W (86 % of answers unchanged from one stage to the next); a_s is a
seed effect (overall accuracy, SD 0 or 3.5 points). Each task is learned to 45 % at its stage
from a 25 % base and forgets 1.5 points per later stage. Methods A and `sequential` are
simulated alike (null) or with A's final scores 3 points higher (power).

For each setting (5 tasks × 24 and 15 tasks × 8 examples; 1 and 3 seeds; seed SD 0 and 3.5)
it prints the coverage of the 95 % intervals of A's `ap`, `bwt` and forgetting (cross-fitted
now; before: the papers' plug-in with its percentile interval), the false-positive rate of the
paired `ap` difference A − sequential, before (percentile bootstrap per seed, t over seeds added
in quadrature) and after (`eval/stats.estimate`). The truth is the expected score over test
examples given the seed (one seed) or over seeds and examples (several seeds). Last, it sizes
a study for +3 ap with `bench/sizing` from simulated pilots and checks the power at that size.

    python benchmarks/interval_coverage.py [--replicates 2000] [--resamples 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from retain.bench.sizing import Components, power, smallest_n
from retain.eval.crossfit import strata_sizes, stratified_draw
from retain.eval.stats import ALPHA, estimate, t_quantile
from retain.eval.uncertainty import batch_metrics

PHI = NormalDist()
V_B, V_U, V_W = 0.588, 0.317, 0.095  # latent variances: seed agreement 70 %, stage 86 %
BASE, LEARNED, DECAY = 0.25, 0.45, 0.015
METRICS = ("ap", "bwt", "forgetting")


@dataclass(frozen=True)
class Setting:
    tasks: int
    n: int
    seeds: int
    seed_sd: float  # score points

    def label(self) -> str:
        return f"{self.tasks}×{self.n}, {self.seeds} seed(s), seed SD {self.seed_sd:g}"


def true_scores(T: int) -> np.ndarray:
    """Expected accuracy P[t, i] (stage t = 0..T, task i) with a zero seed effect."""
    P = np.full((T + 1, T), BASE)
    for i in range(T):
        for t in range(i + 1, T + 1):
            P[t, i] = LEARNED - DECAY * (t - i - 1)
    return P


def latent_sd(seed_sd: float) -> float:
    """Latent seed SD that moves a ~35 % score by `seed_sd` points."""
    return seed_sd / 100.0 / PHI.pdf(PHI.inv_cdf(0.35))


def truth(P: np.ndarray, shift: np.ndarray) -> dict[str, float]:
    """Metrics of the expected matrix Φ(μ + shift) (shift: a seed effect, or 0 with the
    marginal μ over seeds)."""
    T = P.shape[1]
    R = 100.0 * np.vectorize(PHI.cdf)(np.vectorize(PHI.inv_cdf)(P) + shift)
    forget = [R[j:T, j - 1].max() - R[T, j - 1] for j in range(1, T)]
    return {"ap": R[T].mean(), "bwt": np.mean([R[T, i - 1] - R[i, i - 1] for i in range(1, T)]),
            "forgetting": float(np.mean(forget))}  # fmt: skip


def simulate(rng: np.random.Generator, s: Setting, methods: int, gain: float, sd_a: float
             ) -> tuple[np.ndarray, np.ndarray]:
    """Answers Y[method, seed, stage, task, example] and the seed effects a[method, seed]."""
    T, n, k = s.tasks, s.n, s.seeds
    mu = np.vectorize(PHI.inv_cdf)(true_scores(T))
    a = rng.normal(0.0, sd_a, size=(methods, k)) if sd_a > 0 else np.zeros((methods, k))
    B = rng.normal(0, math.sqrt(V_B), size=(1, 1, 1, T, n))
    U = rng.normal(0, math.sqrt(V_U), size=(methods, k, 1, T, n))
    W = rng.normal(0, math.sqrt(V_W), size=(methods, k, T + 1, T, n))
    M = np.broadcast_to(mu[None, None, :, :, None], W.shape).copy()
    if gain:  # method 0's final row up by `gain` points on average
        M[0, :, T] = np.vectorize(PHI.inv_cdf)(true_scores(T)[T] + gain / 100.0)[None, :, None]
    Z = M + a[:, :, None, None, None] + B + U + W
    return (Z > 0).astype(float), a


def replicates(Y: np.ndarray, idx: np.ndarray | None) -> dict[str, np.ndarray]:
    """Every run's metrics on the draws idx [T, B, n] (None: the point values), through the
    library's `batch_metrics`: arrays [methods, seeds, B]."""
    m, k, S, T, n = Y.shape
    draw = np.broadcast_to(np.arange(n), (T, 1, n)) if idx is None else idx
    B = draw.shape[1]
    names = {"ap": "ap", "bwt": "bwt", "forgetting": "forgetting_max_xfit",
             "plugin": "forgetting_max"}  # fmt: skip
    out = {key: np.empty((m, k, B)) for key in names}
    present = np.ones((S, T), dtype=bool)
    for run in np.ndindex(m, k):  # one run at a time: a whole bench's draws would not fit
        taken = Y[run][:, np.arange(T)[:, None, None], draw]  # [S, T, B, n]
        full, half_a, half_b = (np.moveaxis(100.0 * x.mean(-1), -1, 0)
                                for x in (taken, taken[..., 0::2], taken[..., 1::2]))
        got = batch_metrics(full, np.zeros((B, S, 0)), (half_a, half_b), present,
                            np.zeros((S, 0), dtype=bool), [], [])  # fmt: skip
        for key, name in names.items():
            out[key][run] = got[name]
    return out


def old_interval(points: np.ndarray, draws: np.ndarray) -> tuple[float, float]:
    """The rule before #25: percentile half-widths of the seed-mean's draws and t over seeds,
    added in quadrature."""
    k, mean = len(points), float(np.mean(points))
    h_seed = t_quantile(0.95, k - 1) * float(np.std(points, ddof=1)) / math.sqrt(k) if k > 1 \
        else 0.0
    lo, hi = np.percentile(draws.mean(axis=0), [2.5, 97.5])
    return mean - math.hypot(max(mean - lo, 0), h_seed), mean + math.hypot(max(hi - mean, 0),
                                                                            h_seed)


def hierarchical_interval(points: np.ndarray, draws: np.ndarray, rng: np.random.Generator
                          ) -> tuple[float, float]:
    """The alternative to `stats.estimate`: a two-stage percentile bootstrap, seeds drawn with
    replacement for each example draw (one seed: the plain example bootstrap)."""
    k, B = draws.shape
    pick = rng.integers(0, k, size=(B, k)) if k > 1 else np.zeros((B, 1), dtype=int)
    shift = float(np.mean(points)) - float(np.mean(draws))  # centre on the point value
    values = draws[pick, np.arange(B)[:, None]].mean(axis=1) + shift
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def one_replicate(rng: np.random.Generator, s: Setting, n_draws: int, gain: float = 0.0,
                  alpha: float = ALPHA) -> dict[str, float]:
    sd_a = latent_sd(s.seed_sd)
    Y, a = simulate(rng, s, 2, gain, sd_a)
    point = {k: v[..., 0] for k, v in replicates(Y, None).items()}
    idx = np.stack([stratified_draw(rng, s.n, n_draws) for _ in range(s.tasks)])
    reps = replicates(Y, idx)
    strata = [m for _ in range(s.tasks) for m in strata_sizes(s.n)]
    P = true_scores(s.tasks)
    if s.seeds == 1:  # the truth given the seed
        want = truth(P, a[0, 0])
        diff_truth = want["ap"] - truth(P, a[1, 0])["ap"]
    else:  # over seeds: the marginal of Φ(μ + a) is Φ(μ / √(1 + σ²))
        scale = math.sqrt(1 + sd_a**2)
        want = truth(np.vectorize(PHI.cdf)(np.vectorize(PHI.inv_cdf)(P) / scale), 0.0)
        diff_truth = 0.0
    out: dict[str, float] = {}
    for name in METRICS:
        est = estimate(list(point[name][0]), list(reps[name][0]), strata=strata)
        out[f"new_{name}"] = float(est.low <= want[name] <= est.high)  # type: ignore[operator]
        old = "plugin" if name == "forgetting" else name
        lo, hi = old_interval(point[old][0], reps[old][0])
        out[f"old_{name}"] = float(lo <= want[name] <= hi)
        lo, hi = hierarchical_interval(point[name][0], reps[name][0], rng)
        out[f"hier_{name}"] = float(lo <= want[name] <= hi)
    d_pts, d_reps = point["ap"][0] - point["ap"][1], reps["ap"][0] - reps["ap"][1]
    est = estimate(list(d_pts), list(d_reps), strata=strata, difference=True)
    assert est.low is not None and est.high is not None and est.p is not None
    out["new_fp"] = float(not est.low <= diff_truth <= est.high)
    out["new_reject0"] = float(est.significant)
    out["new_reject_alpha"] = float(est.p < alpha)
    lo, hi = old_interval(d_pts, d_reps)
    out["old_fp"] = float(not lo <= diff_truth <= hi)
    lo, hi = hierarchical_interval(d_pts, d_reps, rng)
    out["hier_fp"] = float(not lo <= diff_truth <= hi)
    out["old_reject0"] = float(lo > 0 or hi < 0)
    if est.components:
        out.update(c_seed=est.components[0], c_ex=est.components[1], c_sx=est.components[2])
    return out


def run_setting(s: Setting, reps: int, n_draws: int, seed: int, gain: float = 0.0,
                alpha: float = ALPHA) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    rows = [one_replicate(rng, s, n_draws, gain, alpha) for _ in range(reps)]
    return {k: float(np.mean([r[k] for r in rows if k in r])) for k in rows[0]}


SETTINGS = [Setting(T, n, k, sd) for T, n in ((5, 24), (15, 8)) for k in (1, 3)
            for sd in (0.0, 3.5)]  # fmt: skip


def coverage_table(reps: int, n_draws: int, seed: int) -> list[str]:
    est = ("old", "hier", "new")
    head = (f"{'setting':<36}" + "".join(f"{m:>23}" for m in (*METRICS, "FP Δap"))
            + f"{'Δap≠0':>8}")
    lines = [f"coverage of 95 % intervals, {reps} replicates per setting; each cell: before "
             "#25 / hierarchical bootstrap / stats.estimate", head]
    for k, s in enumerate(SETTINGS):
        r = run_setting(s, reps, n_draws, seed + k)
        triples = [" / ".join(f"{r[e + '_' + m]:.3f}" for e in est) for m in (*METRICS, "fp")]
        cells = "".join(f"{t:>23}" for t in triples)
        zero = f"{r['new_reject0']:.3f}" if s.seeds == 1 else "—"
        lines.append(f"{s.label():<36}{cells}{zero:>8}")
    lines += [
        "forgetting: before = the papers' plug-in forgetting_max with its percentile interval; "
        "hierarchical and stats.estimate: the cross-fit (forgetting_max_xfit).",
        "FP Δap: share of paired ap differences of identical methods whose interval misses the "
        "truth (0; with one seed, the difference of the two seeds' conditional truths).",
        "Δap≠0 (one seed, stats.estimate): the interval excludes 0, a verdict about these two "
        "trainings, not about the methods.",
    ]
    return lines


def power_check(reps: int, n_draws: int, seed: int, methods: int = 5,
                power_reps: int | None = None) -> list[str]:
    """Size a +3 ap study with `bench/sizing` from pilots (3 seeds, 5 × 24, no seed effect,
    as the stored benches estimate) and check its power by simulation at that size."""
    pilot = Setting(5, 24, 3, 0.0)
    got = run_setting(pilot, max(50, reps // 10), n_draws, seed)
    seed_var = max(0.0, got["c_seed"])  # the mean of the untruncated estimates
    c = Components(seed_var, got["c_ex"] * pilot.n, got["c_sx"] * pilot.n, pilot.tasks)
    alpha = ALPHA / methods
    plans = [(k, n) for k in range(2, 11) if (n := smallest_n(c, k, 3.0, alpha)) is not None]
    if not plans:
        return ["power check: the planner found no size for +3 ap with up to 10 seeds"]
    k, n = min(plans, key=lambda p: p[0] * p[1])  # the fewest seed × example evaluations
    planned = Setting(5, n + n % 2, k, 0.0)
    n_power = power_reps or max(50, reps // 4)
    r = run_setting(planned, n_power, n_draws, seed + 99, gain=3.0, alpha=alpha)
    return [
        f"planner (pilot {pilot.label()}, components averaged over {max(50, reps // 10)} "
        f"pilots): {k} seeds × {n} examples per task for +3 ap at the Holm level "
        f"{alpha:.3g} of {methods} methods, predicted power {power(c, k, n, 3.0, alpha):.2f}",
        f"simulated at {planned.label()}, true +3 ap, {n_power} replicates: power "
        f"{r['new_reject_alpha']:.3f} at level {alpha:.3g}; at 0.05 {r['new_reject0']:.3f} "
        f"(before: {r['old_reject0']:.3f})",
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicates", type=int, default=2000, help="per setting (default 2000)")
    ap.add_argument("--resamples", type=int, default=200, help="bootstrap draws per replicate")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-power", action="store_true", help="skip the planner's power check")
    ap.add_argument("--no-coverage", action="store_true", help="only the power check")
    ap.add_argument("--power-replicates", type=int, default=None,
                    help="replicates at the planned size (default: replicates / 4)")
    args = ap.parse_args(argv)
    start = time.process_time()
    if not args.no_coverage:
        for line in coverage_table(args.replicates, args.resamples, args.seed):
            print(line, flush=True)
    if not args.no_power:
        for line in power_check(args.replicates, args.resamples, args.seed + 1000,
                                power_reps=args.power_replicates):
            print(line, flush=True)
    print(f"({time.process_time() - start:.0f} CPU s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
