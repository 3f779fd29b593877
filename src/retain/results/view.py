"""What a report reads from one run directory, and how each metric is presented.

Reports are rebuilt from files at any time, also for old or interrupted runs, so every file
and every key is optional here: a missing one gives an empty section, never an error. When
`metrics.json` has no intervals (or lacks a metric added since) but `examples.npz` exists, they
are computed on the spot with the same bootstrap the loop uses, so an older run still gets CIs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from retain.eval.crossfit import PLUGIN_MAX
from retain.eval.matrix import ScoreMatrix
from retain.eval.metrics import DEFINITIONS, compute_metrics, cost_summary, lower_is_better
from retain.eval.seeds import noise_note
from retain.eval.uncertainty import BOOTSTRAP_METRICS, bootstrap_metrics
from retain.storage.examples import EXAMPLES_FILE, ExampleResults
from retain.storage.files import read_log
from retain.yaml_io import load_yaml, read_text

HEADLINE: tuple[str, ...] = (*BOOTSTRAP_METRICS, "gap_closed")
"""Scalar metrics of the report tables, in display order (`ap_per_stage` is a figure)."""

LOWER_IS_BETTER: frozenset[str] = frozenset(
    {"forgetting_max", "forgetting_first", "forgetting_max_xfit", "forgetting_first_xfit"}
)
"""Every other headline metric is better when higher (bwt and fwt: less negative)."""

RATIO_METRICS: frozenset[str] = frozenset({"normalized_avg", "normalized_avg_xfit"})
"""Stored as a ratio in metrics.json; shown ×100 so every row reads on the 0–100 scale."""

SEED_NEUTRAL_KEYS: tuple[str, ...] = ("seed", "name", "output_dir")
"""Config keys two runs may differ in and still be seeds of one configuration."""


GENERAL_DELTA = "general_delta:"
"""Prefix of one general benchmark's change from before the first task to after the last
(`general_delta:mmlu`), in the benchmark's own unit: perplexity deltas are better when lower."""


def higher_is_better(name: str) -> bool:
    if name.startswith(GENERAL_DELTA):
        return not lower_is_better(name.removeprefix(GENERAL_DELTA))
    return name not in LOWER_IS_BETTER


def unit(name: str) -> str:
    if name in RATIO_METRICS:
        return "ratio x100"
    if name.startswith(GENERAL_DELTA) and lower_is_better(name.removeprefix(GENERAL_DELTA)):
        return "perplexity"
    return "score points"


def general_delta_names(runs: Sequence[RunView]) -> list[str]:
    """`general_delta:<benchmark>` for every general benchmark of any run, in first-seen order."""
    names = [f"{GENERAL_DELTA}{g}" for run in runs for g in run.general]
    return list(dict.fromkeys(names))


def arrow(name: str) -> str:
    return "↑" if higher_is_better(name) else "↓"


def direction_text(name: str) -> str:
    return "higher is better" if higher_is_better(name) else "lower is better"


def label(name: str) -> str:
    return f"{name} (×100)" if name in RATIO_METRICS else name


def scale(name: str, value: Any) -> float | None:
    """A stored metric value on the displayed scale; None when missing or not finite."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        return None
    x = float(value) * (100.0 if name in RATIO_METRICS else 1.0)
    return x if math.isfinite(x) else None


def interval(name: str, ci: Any) -> tuple[float | None, float | None, float | None]:
    """(value, low, high) of a stored `{"value", "low", "high"}` on the displayed scale."""
    if not isinstance(ci, dict):
        return None, None, None
    return scale(name, ci.get("value")), scale(name, ci.get("low")), scale(name, ci.get("high"))


class RunView:
    """One run directory as the report sees it (see the module docstring)."""

    def __init__(self, run_dir: Path, score: str | None = None) -> None:
        """`score` (`generate` | `loglik`) re-scores the run with that primary score, from
        `examples.npz` alone (`results.scorers`); None keeps the run's own."""
        self.dir = Path(run_dir)
        scores = self.dir / "scores.csv"
        try:
            self.matrix: ScoreMatrix | None = (
                ScoreMatrix.from_csv(scores) if scores.exists() else None
            )
        except (ValueError, KeyError, UnicodeDecodeError) as exc:
            detail = " ".join(str(exc).split())[:160]
            raise ValueError(
                f"{scores} is damaged ({detail}); restore it from a copy, or run the same "
                "command again in that run directory: a resume rewrites it from the checkpoint"
            ) from None
        self.metrics: dict[str, Any] = _read_json(self.dir / "metrics.json")
        if self.matrix is not None:  # metrics added since the run was written come from its matrix
            self.metrics = {**compute_metrics(self.matrix), **self.metrics}
        self.log = read_log(self.dir / "log.jsonl")
        cost = self.metrics.get("cost")
        self.cost: dict[str, Any] = (
            cost if isinstance(cost, dict) else (cost_summary(self.log) if self.log else {})
        )
        self.environment: dict[str, Any] = _read_json(self.dir / "environment.json")
        config_path = self.dir / "config.yaml"
        self.problems: list[str] = []
        """Why something could not be read or computed, said on the page."""
        try:
            self.config_text = read_text(config_path, "run config") if config_path.exists() else ""
            config = load_yaml(self.config_text, str(config_path)) if self.config_text else {}
        except (OSError, ValueError) as exc:
            self.config_text, config = "", {}
            self.problems.append(f"{exc}; the run's settings are not shown")
        self.config: dict[str, Any] = config if isinstance(config, dict) else {}
        self.name = str(self.config.get("name") or self.dir.name)
        self.score = score
        if score is not None:
            from retain.results.scorers import switch_primary

            switch_primary(self, score)

    # ---- per-example results and intervals ----

    @cached_property
    def examples(self) -> ExampleResults | None:
        path = self.dir / EXAMPLES_FILE
        if not path.exists():
            return None
        try:
            return ExampleResults.load(path)
        except (ValueError, KeyError, OSError) as exc:
            self.problems.append(f"{EXAMPLES_FILE} could not be read: {exc}")
            return None

    @property
    def tasks(self) -> list[str]:
        return list(self.matrix.tasks) if self.matrix is not None else []

    @property
    def general(self) -> list[str]:
        return list(self.matrix.general) if self.matrix is not None else []

    @cached_property
    def _bootstrap(self) -> dict[str, Any] | None:
        """Intervals computed from examples.npz, for runs whose metrics.json has none."""
        if self.examples is None or not self.tasks:
            return None
        seed = self.config.get("seed")  # the run's own seed, as its metrics.json would use
        seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else 0
        try:
            return bootstrap_metrics(self.examples, self.tasks, self.general, seed=seed)
        except ValueError as exc:
            self.problems.append(f"no intervals: {exc}")
            return None

    @cached_property
    def ci(self) -> dict[str, Any]:
        """`{metric: {"value", "low", "high"} | None}` as stored, else from the bootstrap."""
        stored = self.metrics.get("ci")
        if not isinstance(stored, dict):
            return dict(self._bootstrap or {})
        if all(name in stored for name in BOOTSTRAP_METRICS):
            return stored
        added = {k: v for k, v in (self._bootstrap or {}).items() if k in BOOTSTRAP_METRICS}
        return {**added, **stored}  # metrics newer than the run get their interval too

    @property
    def ci_source(self) -> str | None:
        if isinstance(self.metrics.get("ci"), dict):
            return "metrics.json"
        return f"computed now from {EXAMPLES_FILE}" if self.ci else None

    @cached_property
    def ap_per_stage_ci(self) -> list[dict[str, Any]]:
        stored = self.metrics.get("ap_per_stage_ci")
        if isinstance(stored, list):
            return [c for c in stored if isinstance(c, dict)]
        boot = self._bootstrap if not isinstance(self.metrics.get("ci"), dict) else None
        return list((boot or {}).get("ap_per_stage") or [])

    def value(self, name: str) -> float | None:
        """Point value on the displayed scale (metrics.json, else the interval's value)."""
        got = scale(name, self.metrics.get(name))
        return got if got is not None else interval(name, self.ci.get(name))[0]

    def bounds(self, name: str) -> tuple[float | None, float | None]:
        if name in PLUGIN_MAX:  # the papers' plug-in: biased at small n, no interval (#25)
            return None, None
        _, low, high = interval(name, self.ci.get(name))
        return low, high

    # ---- per-task facts ----

    @cached_property
    def n_per_task(self) -> dict[str, int]:
        stored = self.metrics.get("n_per_task")
        if isinstance(stored, dict):
            return {str(k): int(v) for k, v in stored.items() if isinstance(v, int | float)}
        if self.examples is not None:
            names = [n for n in [*self.tasks, *self.general] if self.examples.n_examples(n)]
            return self.examples.n_per_task(names or None)
        return {}

    @property
    def noise(self) -> str | None:
        """The plain 'this is noise' sentence when any task has fewer than 50 test examples."""
        stored = self.metrics.get("noise_note")
        if isinstance(stored, str) and stored:
            return stored
        counts = {t: n for t, n in self.n_per_task.items() if not self.tasks or t in self.tasks}
        return noise_note(counts) if counts else None

    @property
    def warnings(self) -> list[str]:
        return [str(w) for w in self.metrics.get("warnings") or []]

    def task_facts(self, name: str) -> dict[str, Any]:
        """Scoring settings of a task or general benchmark (whatever keys the run wrote)."""
        scoring = self.metrics.get("scoring")
        facts = dict(scoring.get(name) or {}) if isinstance(scoring, dict) else {}
        if self.matrix is not None:
            facts.setdefault("score_type", self.matrix.score_types.get(name))
            if name in self.matrix.decoding:
                facts.setdefault("decoding", self.matrix.decoding[name])
        return facts

    def truncation(self, name: str) -> dict[str, Any]:
        stored = self.metrics.get("truncation")
        got = stored.get(name) if isinstance(stored, dict) else None
        return got if isinstance(got, dict) else {}

    def unevaluated_cells(self) -> int:
        """Cells above the superdiagonal left blank on purpose (`eval.cells=needed`)."""
        if self.matrix is None:
            return 0
        R = self.matrix.R
        return int(sum(np.isnan(R[t, t + 1 :]).sum() for t in range(1, R.shape[0])))

    def metric_notes(self) -> dict[str, str]:
        """Metrics whose definition would use the blank cells, and what they use instead."""
        if not self.unevaluated_cells():
            return {}
        return {
            "normalized_avg": "max over the evaluated stages only: cells above the superdiagonal "
            "were not evaluated (eval.cells=needed)"
        }

    def definitions(self) -> dict[str, str]:
        defs = self.metrics.get("definitions")
        return {**DEFINITIONS, **defs} if isinstance(defs, dict) else dict(DEFINITIONS)

    # ---- configuration ----

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    def config_key(self) -> str | None:
        """The configuration without the seed-neutral keys, canonical; None without a config."""
        if not self.config:
            return None
        rest = {k: v for k, v in self.config.items() if k not in SEED_NEUTRAL_KEYS}
        return json.dumps(rest, sort_keys=True, default=str)


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a file; a missing or torn file reads as empty."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
