"""Running a bench so that nothing is done twice: each run is reused, resumed or re-run.

A run whose directory holds finished results of the same configuration is reused as it is; one
with a checkpoint of the same configuration resumes from it; one whose configuration changed
in a key that affects it (`config.relevant_config`: a change to `mssr.*` does not touch the
`sequential` runs) is cleared and run again. So a bench interrupted in any session continues
where it stopped, and a changed setting re-runs only the runs it changes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from retain.bench.plan import MANIFEST, BenchPlan, BenchRun
from retain.config import config_differences
from retain.storage.files import write_json
from retain.storage.rundir import LOCK_FILE, waiting_lock
from retain.yaml_io import load_yaml_file

Status = Literal["new", "finished", "resume", "changed"]


@dataclass(frozen=True)
class RunState:
    status: Status
    reason: str = ""


def run_state(run: BenchRun) -> RunState:
    """What the bench must do for `run`, judged from its directory alone."""
    from retain.train.checkpoint import has_checkpoint
    from retain.train.resume import CHECKPOINTS

    run_dir = run.run_dir
    config_path = run_dir / "config.yaml"
    if not config_path.exists():
        return RunState("new")
    try:
        old = load_yaml_file(config_path, "run config")
    except (OSError, ValueError):  # an unreadable config is a changed one
        return RunState("changed", f"{config_path} is unreadable")
    if not isinstance(old, dict):
        return RunState("changed", f"{config_path} is no run configuration")
    diffs = config_differences(_with_defaults(old), run.config.model_dump(mode="json"))
    if diffs:
        return RunState("changed", "; ".join(diffs))
    if _finished(run_dir):
        return RunState("finished")
    if has_checkpoint(run_dir / CHECKPOINTS):
        return RunState("resume")
    return RunState("new")


def _with_defaults(old: dict[str, Any]) -> dict[str, Any]:
    """An older config.yaml with the keys added since filled in, as the run used them."""
    from retain.config import RunConfig

    try:
        return RunConfig.model_validate(old).model_dump(mode="json")
    except ValueError:
        return old


def _finished(run_dir: Path) -> bool:
    path = run_dir / "metrics.json"
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(metrics.get("complete")) and (run_dir / "scores.csv").exists()


def check_plan(plan: BenchPlan, overwrite: bool) -> dict[tuple[str, int], RunState]:
    """Every run's state, and every run directory checked, before the first run trains."""
    from retain.train.resume import preflight

    states = {}
    for run in plan.runs:
        state = run_state(run)
        if state.status == "new":
            preflight(run.config, overwrite)  # foreign files are refused here, not mid-bench
        states[(run.method, run.seed)] = state
    return states


def merged_manifest(plan: BenchPlan) -> dict[str, Any]:
    """This plan's runs joined to those an earlier invocation listed in the same bench folder
    (e.g. ablations run on one seed beside methods run on three), so the report covers all."""
    from retain.bench.plan import read_manifest

    mine = plan.manifest()
    if not (plan.root / MANIFEST).exists():
        return mine
    try:
        old = read_manifest(plan.root)
    except ValueError:
        return mine
    runs = [r for r in old["runs"] if isinstance(r, dict)]
    known = {(r.get("method"), r.get("seed")) for r in runs}
    runs += [r for r in mine["runs"] if (r["method"], r["seed"]) not in known]
    methods = [*old.get("methods", []), *(m for m in mine["methods"]
                                          if m not in old.get("methods", []))]
    seeds = sorted({*old.get("seeds", []), *mine["seeds"]})
    return {**mine, "methods": methods, "seeds": seeds, "runs": runs}


def record_in_manifest(plan: BenchPlan) -> None:
    """Add this plan's runs to the bench's manifest. Read, merge and write happen under a lock
    on the bench folder: two bench processes sharing it (one per seed) would otherwise each
    write back the manifest they read, and the slower one would drop the other's runs."""
    plan.root.mkdir(parents=True, exist_ok=True)
    with waiting_lock(plan.root / LOCK_FILE):
        write_json(plan.root / MANIFEST, merged_manifest(plan))


def execute(
    plan: BenchPlan,
    overwrite: bool = False,
    echo: Any = print,
) -> dict[tuple[str, int], dict[str, Any]]:
    """Run what must run; the metrics of every run, by (method, seed)."""
    from retain.train.loop import run as run_one

    states = check_plan(plan, overwrite)
    record_in_manifest(plan)
    out = {}
    for run in plan.runs:
        state = states[(run.method, run.seed)]
        where = f"{run.method} (seed {run.seed})"
        if state.status == "finished" and not overwrite:
            echo(f"== {where}: finished earlier, reused ({run.run_dir})")
            out[(run.method, run.seed)] = json.loads((run.run_dir / "metrics.json").read_text())
            continue
        if state.status == "changed":
            echo(f"== {where}: configuration changed ({state.reason}); running it again")
        elif state.status == "resume":
            echo(f"== {where}: resuming")
        else:
            echo(f"== {where}")
        result = run_one(run.config, overwrite=overwrite or state.status == "changed")
        out[(run.method, run.seed)] = result.metrics
    return out
