"""The table a command prints when it finishes: each run's headline metrics with their 95 %
CIs, what to distrust (warnings, small test sets), and, for several runs on the same test
examples, the paired difference against the first run with its CI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

HEADLINE = (("ap", "ap"), ("bwt", "bwt"), ("forgetting_max", "forget"))
DIFFERENCES = ("ap", "bwt", "forgetting_max", "la")


def _with_ci(metrics: dict[str, Any], key: str) -> str:
    value = metrics.get(key)
    if not isinstance(value, int | float):
        return f"{'—':>21}"
    ci = (metrics.get("ci") or {}).get(key)
    if not ci:
        return f"{value:8.2f}{'':13}"
    return f"{value:8.2f} [{ci['low']:5.1f},{ci['high']:5.1f}]"


def summary_lines(
    rows: list[tuple[str, dict[str, Any]]], run_dirs: list[Path] | None = None
) -> list[str]:
    head = "".join(f"{label:>21}" for _, label in HEADLINE)
    lines = [f"{'method':<20}{head}{'la':>8}{'gap':>8}{'time':>8}"]
    for name, metrics in rows:
        cost = metrics.get("cost", {})
        seconds = cost.get("train_seconds", 0.0) + cost.get("eval_seconds", 0.0)
        gap = metrics.get("gap_closed")
        la = metrics.get("la")
        lines.append(
            f"{name:<20}{''.join(_with_ci(metrics, k) for k, _ in HEADLINE)}"
            f"{la if la is None else f'{la:8.2f}':>8}"
            f"{'—' if gap is None else f'{gap:.2f}':>8}{seconds:7.0f}s"
        )
    lines.append("(95 % bootstrap intervals over test examples in brackets)")
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
    from retain.eval.uncertainty import paired_difference
    from retain.results.examples import ExampleResults

    base_name, base_dir = rows[0][0], run_dirs[0]
    try:
        base = ExampleResults.load(base_dir)
        tasks = ScoreMatrix.from_csv(base_dir / "scores.csv").tasks
    except (OSError, ValueError, KeyError) as exc:
        return [f"paired differences: n/a ({exc})"]
    lines = [f"paired difference against {base_name} (95 % CI; * = significant):"]
    for (name, _), run_dir in zip(rows[1:], run_dirs[1:], strict=True):
        try:
            diffs = paired_difference(ExampleResults.load(run_dir), base, tasks)
        except (OSError, ValueError, KeyError) as exc:
            lines.append(f"  {name}: cannot be paired ({exc})")
            continue
        parts = []
        for key in DIFFERENCES:
            d = diffs.get(key)
            if d is not None:
                star = "*" if d["significant"] else ""
                parts.append(f"{key} {d['value']:+.2f} [{d['low']:+.1f},{d['high']:+.1f}]{star}")
        lines.append(f"  {name}: " + ("; ".join(parts) or "no metric to compare"))
    return lines
