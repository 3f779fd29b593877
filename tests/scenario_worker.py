"""Many two-process scenarios in one torchrun launch (each rank runs this script).

    python -m torch.distributed.run --nproc_per_node=2 tests/scenario_worker.py PLAN.json

Process start-up (torch, transformers, peft: seconds of CPU per rank) is paid once instead of
once per scenario. PLAN.json: {"out": DIR, "scenarios": [...]}, each scenario one of

  {"name": N, "kind": "run", "args": [OVERRIDES], "crash": [TASK, STEP] | null}
      `retain run /dev/null OVERRIDES output_dir=DIR name=N` (the CLI's path: `load_config`
      then `run`; `{out}` in an override stands for DIR); with
      `crash`, the run first dies in-process by `tests.killing.crash_at(TASK, STEP)` (it trained
      past its last checkpoint, as a SIGKILLed run did), is checked not to have finished, and
      is started again in the same ranks;
  {"name": N, "kind": "guard"}    `Accelerator(cpu=True)` passes retain's process-count guard;
  {"name": N, "kind": "shards"}   tests/fsdp_worker.py's shard and full-state round trip.

Each scenario writes DIR/N.rank<R>.json on success ({"ok": true, ...}) or its traceback in
DIR/N.rank<R>.error and the next scenario starts: a test reads only its own scenarios' files.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests` as a package


def _run(scenario: dict[str, Any], out: Path) -> dict[str, Any]:
    from retain.config import load_config
    from retain.train.loop import run
    from tests.killing import Crash, crash_at, step_records

    args = [a.replace("{out}", str(out)) for a in scenario["args"]]
    named = [f"output_dir={out}", f"name={scenario['name']}"]
    config = load_config(Path("/dev/null"), [*args, *named])
    result: dict[str, Any] = {"ok": True}
    if scenario.get("crash"):
        task, step = scenario["crash"]
        with crash_at(task, step):
            try:
                run(config)
            except Crash as exc:
                result["crashed"] = str(exc)
            else:
                raise AssertionError("the run finished before the crash: test resume elsewhere")
        assert not (config.run_dir / "metrics.json").exists(), "the crashed run finished"
        steps = [r["task_step"] for r in step_records(config.run_dir) if r["task"] == task]
        result["crashed_at"] = max(steps)
    result["resumed"] = run(config).resumed
    return result


def _guard() -> dict[str, Any]:
    from accelerate import Accelerator

    from retain.train.distributed import check_process_count

    accelerator = Accelerator(cpu=True)
    check_process_count(accelerator)
    return {"ok": True, "accepted": accelerator.num_processes}


def _shards() -> dict[str, Any]:
    from tests.fsdp_worker import shards

    shards()
    return {"ok": True}


def main(plan_path: str) -> None:
    import retain.train.loop  # noqa: F401  (loaded before the freeze below)

    gc.freeze()  # each run's garbage collection then skips the libraries' objects (conftest.py)
    plan = json.loads(Path(plan_path).read_text())
    out, rank = Path(plan["out"]), int(os.environ["RANK"])
    for scenario in plan["scenarios"]:
        name, kind = scenario["name"], scenario["kind"]
        try:
            if kind == "run":
                result = _run(scenario, out)
            elif kind == "guard":
                result = _guard()
            elif kind == "shards":
                result = _shards()
            else:
                raise ValueError(f"{plan_path}: scenario {name!r} has unknown kind {kind!r}")
        except Exception:
            (out / f"{name}.rank{rank}.error").write_text(traceback.format_exc())
            continue
        (out / f"{name}.rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
