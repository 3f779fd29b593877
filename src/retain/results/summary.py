"""The table a command prints when it finishes: each run's headline metrics with their 95 %
intervals (over test examples, conditional on the run's training seed), what to distrust
(warnings, small test sets), and, for several runs on the same test examples, the paired
difference against the first run with its interval from `eval/stats.py` (the same as `retain
bench` and `retain report A B` print), `ap` Holm- and the rest Benjamini–Hochberg-adjusted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retain.eval.stats import ONE_SEED

HEADLINE = (("ap", "ap"), ("bwt", "bwt"), ("forgetting_max_xfit", "forget (x-fit)"))
DIFFERENCES = ("ap", "bwt", "forgetting_max_xfit", "la")


def _with_ci(metrics: dict[str, Any], key: str) -> str:
    ci = (metrics.get("ci") or {}).get(key)
    value = metrics.get(key, (ci or {}).get("value"))
    if not isinstance(value, int | float):
        return f"{'—':>21}"
    if not ci or ci.get("low") is None or ci.get("high") is None:
        return f"{value:8.2f}{'':13}"
    return f"{value:8.2f} [{ci['low']:5.1f},{ci['high']:5.1f}]"


def summary_lines(
    rows: list[tuple[str, dict[str, Any]]], run_dirs: list[Path] | None = None
) -> list[str]:
    head = "".join(f"{label:>21}" for _, label in HEADLINE)
    lines = [f"{'method':<20}{head}{'la':>8}{'gap':>8}{'time':>8}"]
    for name, metrics in rows:
        cost = metrics.get("cost", {})
        parts = (cost.get("train_seconds", 0.0), cost.get("eval_seconds", 0.0))
        seconds = sum(parts) if None not in parts else None
        gap = metrics.get("gap_closed")
        la = metrics.get("la")
        lines.append(
            f"{name:<20}{''.join(_with_ci(metrics, k) for k, _ in HEADLINE)}"
            f"{la if la is None else f'{la:8.2f}':>8}"
            f"{'—' if gap is None else f'{gap:.2f}':>8}"
            f"{'—' if seconds is None else f'{seconds:7.0f}s':>8}"
        )
    lines.append(f"(95 % intervals {ONE_SEED} in brackets; forget (x-fit): cross-fitted "
                 "forgetting_max, the papers' plug-in is biased upward at small n)")
    from retain.results.two_score_summary import two_score_lines

    lines += two_score_lines(rows)
    for name, metrics in rows:
        lines += [f"warning ({name}): {w}" for w in metrics.get("warnings", [])]
    notes = {m.get("noise_note") for _, m in rows if m.get("noise_note")}
    lines += [f"note: {n}" for n in sorted(notes)]
    if run_dirs is not None and len(rows) > 1:
        lines += _paired_lines(rows, run_dirs)
    return lines


def _paired_lines(rows: list[tuple[str, dict[str, Any]]], run_dirs: list[Path]) -> list[str]:
    """`run − first run` for each later run, paired over the same test examples."""
    from retain.eval.matrix import ScoreMatrix
    from retain.eval.paired_differences import paired_estimates
    from retain.eval.stats import adjust
    from retain.storage.examples import ExampleResults

    base_name, base_dir = rows[0][0], run_dirs[0]
    try:
        base = ExampleResults.load(base_dir)
        matrix = ScoreMatrix.from_csv(base_dir / "scores.csv")
    except (OSError, ValueError, KeyError) as exc:
        return [f"paired differences: n/a ({exc})"]
    lines = [f"paired difference against {base_name} (95 % interval; * = significant, ap "
             "Holm-adjusted across runs, others Benjamini–Hochberg):"]
    found: dict[str, Any] = {}
    for (name, _), run_dir in zip(rows[1:], run_dirs[1:], strict=True):
        try:
            found[name] = paired_estimates(
                ExampleResults.load(run_dir), base, matrix.tasks, matrix.general
            )
        except (OSError, ValueError, KeyError) as exc:
            found[name] = f"cannot be paired ({exc})"
    table = adjust({k: v for k, v in found.items() if isinstance(v, dict)}, "ap")
    for name, diffs in found.items():
        if isinstance(diffs, str):
            lines.append(f"  {name}: {diffs}")
            continue
        parts = []
        for key in DIFFERENCES:
            d = table[name].get(key)
            if d is not None and d.low is not None and d.high is not None:
                star = "*" if d.significant else ""
                parts.append(f"{key} {d.mean:+.2f} [{d.low:+.1f},{d.high:+.1f}]{star}")
        lines.append(f"  {name}: " + ("; ".join(parts) or "no metric to compare"))
    return lines
