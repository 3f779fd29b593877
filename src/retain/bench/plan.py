"""Which runs a bench consists of, and where each lives: decided and validated before any run.

Layout: `<output_dir>/<name>/seed<s>/<method>/`, one ordinary run directory per method and seed,
with `sequential` and `multitask` beside the methods of every seed (they are the `gap_closed`
references, found as siblings). `bench.json` at the root lists the runs, so `retain report` can
re-render the comparison at any time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retain.config import ConfigError, RunConfig, load_config, validate_config
from retain.yaml_io import load_yaml_file

REFERENCES = ("sequential", "multitask")
MANIFEST = "bench.json"


@dataclass(frozen=True)
class BenchRun:
    method: str
    """As written on the command line: `mssr`, or a combination `mssr+gere+procl`."""
    seed: int
    config: RunConfig

    @property
    def run_dir(self) -> Path:
        return self.config.run_dir


@dataclass
class BenchPlan:
    name: str
    root: Path
    methods: list[str]
    """Display order: the references first, then the methods as given."""
    seeds: list[int]
    runs: list[BenchRun] = field(default_factory=list)

    def run(self, method: str, seed: int) -> BenchRun:
        return next(r for r in self.runs if r.method == method and r.seed == seed)

    def manifest(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "methods": self.methods,
            "seeds": self.seeds,
            "runs": [
                {"method": r.method, "seed": r.seed, "dir": str(r.run_dir.relative_to(self.root))}
                for r in self.runs
            ],
        }


def base_config(target: str, overrides: list[str]) -> dict[str, Any]:
    """The shared configuration of a bench from a run config, a stream file or a stream name.

    A YAML file with `tasks:` is a stream file; any other YAML file is a run configuration; a
    word that is no file names a registered stream (`retain streams`).
    """
    path = Path(target)
    if path.is_file():
        try:
            data = load_yaml_file(path, "config file")
        except (OSError, ValueError) as exc:  # reported as one line
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        if isinstance(data, dict) and "tasks" in data:
            config = load_config(None, [f"data.stream={path}", f"name={path.stem}", *overrides])
        else:
            config = load_config(path, overrides)
            if not isinstance(data, dict) or "name" not in data:
                config = load_config(path, [f"name={Path(config.data.stream).stem}", *overrides])
        return config.model_dump(mode="json")
    from retain.data.registry import BUILTIN, STREAMS

    if target != BUILTIN and target not in STREAMS:
        raise ConfigError(
            f"{target!r} is neither a file nor a registered stream; give a run config, a stream "
            f"file, or one of: {', '.join([BUILTIN, *STREAMS])}"
        )
    config = load_config(None, [f"data.stream={target}", f"name={target}", *overrides])
    return config.model_dump(mode="json")


def bench_methods(methods: list[str], references: bool = True) -> list[str]:
    """References first (once), then the given methods in their order, duplicates dropped."""
    given = [m.strip() for m in methods if m.strip()]
    if not given:
        raise ConfigError("--methods: name at least one method, e.g. --methods fixed,mssr")
    order = [*REFERENCES] if references else []
    for method in given:
        if method not in order:
            order.append(method)
    return order


def seed_list(first: int, seeds: int) -> list[int]:
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1 (got {seeds})")
    return [first + k for k in range(seeds)]


def plan_bench(
    base: dict[str, Any], methods: list[str], seeds: int, references: bool = True
) -> BenchPlan:
    """One validated config per method and seed; a bad method fails here, before any run."""
    root = Path(base["output_dir"]) / base["name"]
    order = bench_methods(methods, references)
    plan = BenchPlan(str(base["name"]), root, order, seed_list(int(base["seed"]), seeds))
    for seed in plan.seeds:
        for method in order:
            data = json.loads(json.dumps(base))
            if data["eval"].get("row0_cache") is None:  # the untouched model, scored once
                data["eval"]["row0_cache"] = str(root / "row0")
            data.update(
                methods=method.split("+"),
                seed=seed,
                output_dir=str(root / f"seed{seed}"),
                name=method,
            )
            plan.runs.append(BenchRun(method, seed, validate_config(data, f"method {method}")))
    return plan


def read_manifest(root: Path) -> dict[str, Any]:
    path = Path(root) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a bench manifest ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise ValueError(f"{path}: not a bench manifest (no 'runs' list)")
    return data
