"""The layer contract (pyproject.toml's `[tool.importlinter]`, docs/architecture.md) holds for
the real tree and catches an upward import, whether it sits at module level, in a function or
under `TYPE_CHECKING`, and a top-level module that no layer names.

Each check runs import-linter in a subprocess on a copy of the package, so the copy, not the
`retain` this process has imported, is what it reads."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = (
    "import sys; from importlinter.cli import lint_imports; "
    "sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True, no_logo=True))"
)


def _lint(src: Path, config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(
        [sys.executable, "-c", LINT, str(config)],
        cwd=config.parent, env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of `src/retain` and of pyproject.toml (the contract) under tmp_path."""
    shutil.copytree(ROOT / "src" / "retain", tmp_path / "src" / "retain",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_real_tree_keeps_the_contract() -> None:
    result = _lint(ROOT / "src", ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


UPWARD = {
    "module level": "from retain.results.report import write_report\n",
    "in a function": "\n\ndef _late() -> object:\n"
                     "    from retain.results.report import write_report\n\n"
                     "    return write_report\n",
    "type checking": "\nfrom typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
                     "    from retain.results.report import write_report\n",
}


@pytest.mark.parametrize("where", list(UPWARD))
def test_an_upward_import_breaks_the_contract(tree: Path, where: str) -> None:
    """`eval/` sits below `results/`: eval.matrix importing the report is a violation."""
    module = tree / "src" / "retain" / "eval" / "matrix.py"
    module.write_text(module.read_text() + UPWARD[where])
    result = _lint(tree / "src", tree / "pyproject.toml")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "0 kept, 1 broken" in result.stdout
    assert "retain.eval is not allowed to import retain.results" in result.stdout
    assert "retain.eval.matrix -> retain.results.report" in result.stdout


def test_a_downward_import_keeps_it(tree: Path) -> None:
    """The same kind of edit the other way (results reading eval) is allowed: the check above
    fails for the direction, not for any edit of the copy."""
    module = tree / "src" / "retain" / "results" / "html.py"
    module.write_text(module.read_text() + "from retain.eval.matrix import ScoreMatrix\n")
    result = _lint(tree / "src", tree / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_module_no_layer_names_breaks_the_contract(tree: Path) -> None:
    """`exhaustive`: a new top-level module must be placed in a layer before it can be used."""
    (tree / "src" / "retain" / "newthing.py").write_text('"""Placed nowhere."""\n')
    result = _lint(tree / "src", tree / "pyproject.toml")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "retain.newthing" in result.stdout
