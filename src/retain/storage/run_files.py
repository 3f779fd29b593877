"""The one list of what a run writes into its directory, and which of it is retain's own.

`--overwrite` / `--fresh` delete only entries listed here, in a directory whose `config.yaml`
parses as a run config; anything else is named and nothing is deleted. A writer of a new file
or folder adds its entry here (`add`), so the guard never falls behind what runs write.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from retain.storage.files import read_log


@dataclass(frozen=True)
class RunFile:
    """One entry of a run directory. A folder lists the name patterns of its own entries
    (none: any); `early` marks what a run writes before its first checkpoint, which a fresh
    start rewrites, so a directory holding only these may be started again without asking."""

    name: str
    what: str
    folder: bool = False
    contents: tuple[str, ...] = ()
    early: bool = False

    def holds(self, path: Path) -> bool:
        """Whether `path` (named `self.name`) is of the kind this entry is."""
        if path.is_symlink():
            return False
        return path.is_dir() if self.folder else path.is_file()


RUN_FILES: dict[str, RunFile] = {}
"""Every entry a run writes, by name (see `add`)."""


def add(entry: RunFile) -> str:
    """Register what a writer writes; returns its name (for `NAME = add(RunFile(...))`)."""
    RUN_FILES[entry.name] = entry
    return entry.name


LOCK = add(RunFile(".lock", "the run's lock", early=True))
CONFIG = add(RunFile("config.yaml", "the resolved run config", early=True))
ENVIRONMENT = add(RunFile("environment.json", "versions and machine", early=True))
FINGERPRINT = add(RunFile("fingerprint.json", "the data fingerprint", early=True))
LOG = add(RunFile("log.jsonl", "the run's log", early=True))
SCORES = add(RunFile("scores.csv", "the score matrix", early=True))  # row 0 comes first
EXAMPLES = add(RunFile("examples.npz", "per-example results", early=True))
GENERATIONS = add(RunFile("generations.jsonl.gz", "generated answers per example", early=True))
WORK = add(RunFile("work", "files plugins rebuild on a fresh start", folder=True,
                   contents=("gere_teacher.*", "gere_states.*"), early=True))
TRACKERS = add(RunFile("trackers", "experiment tracker files", folder=True, early=True))
CHECKPOINTS = add(RunFile("checkpoints", "the last two checkpoints", folder=True,
                          contents=("latest", "latest.*", "previous", "previous.*")))
ADAPTERS = add(RunFile("adapters", "the adapter after each task", folder=True,
                       contents=("task_*",)))
METRICS = add(RunFile("metrics.json", "the run's metrics"))
REPORT = add(RunFile("report.html", "the run's report"))
for _figure in ("score_matrix", "task_curves", "ap_per_stage", "loss_curves", "replay_events"):
    add(RunFile(f"{_figure}.png", "a figure of the report"))


_ATOMIC_TEMP = re.compile(r"^\.(?P<name>.+)\.\d+\.[0-9a-f]+\.tmp$")
"""`.<name>.<pid>.<hex>.tmp`: a file of the run being replaced when the run was killed
(storage/files.py `replaced_atomically`)."""


def entry_of(path: Path) -> RunFile | None:
    """The entry `path` is (or is the half-written replacement of), or None."""
    temp = _ATOMIC_TEMP.match(path.name)
    if temp is not None and path.is_file():
        entry = RUN_FILES.get(temp.group("name"))
        return entry if entry is not None and not entry.folder else None
    return RUN_FILES.get(path.name)


def foreign_entries(run_dir: Path) -> list[str]:
    """The entries of `run_dir` (and of its listed folders) that no run writes, sorted."""
    out = []
    for path in Path(run_dir).iterdir():
        entry = entry_of(path)
        if entry is None or not (entry.holds(path) or _ATOMIC_TEMP.match(path.name)):
            out.append(path.name + ("/" if path.is_dir() else ""))
            continue
        if entry.folder and entry.contents:
            out += [
                f"{path.name}/{child.name}"
                for child in path.iterdir()
                if not any(fnmatch(child.name, pattern) for pattern in entry.contents)
            ]
    return sorted(out)


def only_early(run_dir: Path) -> bool:
    """Whether `run_dir` holds only what a run writes before its first checkpoint (a checkpoint
    folder with only a half-written `*.tmp` counts: a kill during the first save), and no sign of
    a finished task: results kept without their checkpoints (weights left out of git) are not."""
    if _finished_a_task(Path(run_dir)):
        return False
    for path in Path(run_dir).iterdir():
        entry = entry_of(path)
        if entry is None:
            return False
        if entry.name == CHECKPOINTS:
            if any(not child.name.endswith(".tmp") for child in path.iterdir()):
                return False
        elif not entry.early:
            return False
    return True


def _finished_a_task(run_dir: Path) -> bool:
    """A score row after row 0, or a task's end in the log: what only a run past its first
    checkpoint writes (every task ends with one)."""
    scores, log = run_dir / SCORES, run_dir / LOG
    if scores.is_file():
        for line in scores.read_text(errors="replace").splitlines()[1:]:
            stage, _, cells = line.partition(",")
            if stage.strip() not in ("", "0") and cells.strip(", "):
                return True
    return any(record.get("type") == "task_end" for record in read_log(log))


def shown(names: list[str], limit: int = 4) -> str:
    """`a, b, c, d, ... (9 in all)`: a few names for a one-line message."""
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
