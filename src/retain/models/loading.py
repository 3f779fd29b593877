"""Load a backbone and its tokenizer from a bundled name, a GGUF file, a local folder or a hub id.

GGUF files are dequantised by transformers once (tens of seconds) and kept as a safetensors
folder under the cache root, so every later load takes well under a second. The cache folder is
written atomically and carries sha256 checksums; a damaged or stale cache is rebuilt.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
import transformers
from huggingface_hub import snapshot_download
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from retain.config_sections import ModelConfig
from retain.hub import hub_unreachable
from retain.models.bundled import (
    BUNDLED,
    bundled_gguf_path,
    bundled_model,
    default_cache_root,
    make_shareable,
    sha256_file,
)
from retain.models.tiny import TINY_NAME, tiny_model_and_tokenizer

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
CACHE_META = "retain-cache.json"
CHECKSUMS = "SHA256SUMS"

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(RuntimeError):
    """The backbone could not be loaded; the message says what was tried and what to do."""


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto`: float32 on CPU (bf16 is slow there), bf16 on GPUs that have it, else fp16."""
    if name != "auto":
        return _DTYPES[name]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def cache_root(cfg: ModelConfig) -> Path:
    """`model.cache_dir`, else `$RETAIN_CACHE_DIR`, else `~/.cache/retain/models`."""
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_root()


def load_backbone(
    cfg: ModelConfig, device: torch.device | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The causal LM named by `cfg.name_or_path` on `device`, and its tokenizer.

    Tried in order: `tiny-random`, a bundled name, a `.gguf` file, a local directory, a hub id.
    The model is returned in eval mode; the tokenizer always has a pad token (eos if it had none).
    """
    device = device if device is not None else default_device()
    dtype = resolve_dtype(cfg.dtype, device)
    name = cfg.name_or_path
    start = time.perf_counter()
    if name == TINY_NAME:
        model, tokenizer = tiny_model_and_tokenizer()
        model = model.to(dtype=dtype)
    elif name in BUNDLED:
        root = cache_root(cfg)
        gguf = bundled_gguf_path(name, root)
        model, tokenizer = load_gguf_cached(
            gguf,
            root / name,
            dtype=dtype,
            expected_sha256=bundled_model(name).sha256,
            trust_remote_code=cfg.trust_remote_code,
        )
    elif name.lower().endswith(".gguf"):
        gguf = Path(name).expanduser().resolve()
        if not gguf.is_file():
            raise ModelLoadError(
                f"model.name_or_path: GGUF file {gguf} does not exist; give the path of an "
                f"existing .gguf file or a bundled name ({', '.join([TINY_NAME, *BUNDLED])})"
            )
        model, tokenizer = load_gguf_cached(
            gguf,
            cache_root(cfg) / gguf_cache_name(gguf),
            dtype=dtype,
            trust_remote_code=cfg.trust_remote_code,
        )
    elif Path(name).expanduser().is_dir():
        model, tokenizer = _load_pretrained(
            str(Path(name).expanduser()), dtype, cfg.trust_remote_code, local=True
        )
    elif _looks_like_path(name):
        raise ModelLoadError(
            f"model.name_or_path: {name!r} is neither an existing directory nor a .gguf file; "
            f"bundled names: {', '.join([TINY_NAME, *BUNDLED])}"
        )
    else:
        model, tokenizer = _load_pretrained(name, dtype, cfg.trust_remote_code, local=False)
    _ensure_pad_token(model, tokenizer)
    model = model.to(device)
    model.eval()
    log.info("loaded %s (%s, %s) in %.2fs", name, dtype, device, time.perf_counter() - start)
    return model, tokenizer


def gguf_cache_name(gguf: Path) -> str:
    """Cache folder name of a GGUF file: its stem plus a hash of its absolute path, so that two
    files with the same name in different folders do not share a cache."""
    digest = hashlib.sha256(str(gguf.resolve()).encode()).hexdigest()[:10]
    return f"{gguf.stem}-{digest}"


def load_gguf_cached(
    gguf: Path,
    cache_dir: Path,
    dtype: torch.dtype = torch.float32,
    expected_sha256: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A GGUF model via its safetensors cache in `cache_dir`, converting it first if needed.

    A cache whose checksums fail, whose files do not load, or whose source GGUF changed is
    rebuilt with a warning. The checksum runs in a thread while the weights load, which keeps a
    cached load under a second for a 135M model.
    """
    source = _source_stamp(gguf, expected_sha256)
    problem = _cache_problem(cache_dir, source)
    if problem is None:
        with ThreadPoolExecutor(max_workers=1) as pool:
            verify = pool.submit(_checksum_problem, cache_dir)
            try:
                loaded = _load_pretrained(str(cache_dir), dtype, trust_remote_code, local=True)
            except Exception as exc:  # any failure means a damaged cache
                loaded = None
                problem = f"it failed to load ({type(exc).__name__}: {exc})"
            problem = verify.result() or problem
        if problem is None and loaded is not None:
            return loaded
    if problem is not None and cache_dir.exists():
        warnings.warn(
            f"model cache {cache_dir} is unusable: {problem}; rebuilding it from {gguf}",
            RuntimeWarning,
            stacklevel=2,
        )
    convert_gguf(gguf, cache_dir, source, expected_sha256, trust_remote_code)
    return _load_pretrained(str(cache_dir), dtype, trust_remote_code, local=True)


def convert_gguf(
    gguf: Path,
    cache_dir: Path,
    source: dict[str, Any] | None = None,
    expected_sha256: str | None = None,
    trust_remote_code: bool = False,
) -> Path:
    """Dequantise `gguf` and write it as a safetensors model folder at `cache_dir`, atomically.

    transformers 5 refuses `save_pretrained` on a model loaded with `gguf_file=` ("not
    serializable"), so the weights move into a fresh model built from the same config without
    its quantization entry; that model is created on the meta device to skip random init.
    """
    start = time.perf_counter()
    if expected_sha256 is not None:
        actual = sha256_file(gguf)
        if actual != expected_sha256:
            raise ModelLoadError(
                f"{gguf} has sha256 {actual}, expected {expected_sha256}: the file is damaged; "
                "reinstall its package with --force-reinstall"
            )
    log.warning("converting %s to safetensors (one-time, tens of seconds)", gguf.name)
    folder, filename = str(gguf.parent), gguf.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            folder, gguf_file=filename, trust_remote_code=trust_remote_code
        )
        quantised = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=filename, dtype=torch.float32, trust_remote_code=trust_remote_code
        )
    except Exception as exc:
        raise ModelLoadError(
            f"transformers could not read GGUF file {gguf}: {exc}; check that the file is a "
            "complete GGUF of a supported architecture (download it again if in doubt)"
        ) from exc
    config = copy.deepcopy(quantised.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(
            config, dtype=torch.float32, trust_remote_code=trust_remote_code
        )
    fresh.load_state_dict(quantised.state_dict(), strict=True, assign=True)
    fresh.tie_weights()
    fresh.generation_config = copy.deepcopy(quantised.generation_config)
    del quantised

    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cache_dir.name}.tmp-", dir=cache_dir.parent))
    try:
        fresh.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _write_checksums(tmp)
        meta = {
            "format": CACHE_FORMAT,
            "source": source if source is not None else _source_stamp(gguf, expected_sha256),
            "transformers": transformers.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / CACHE_META).write_text(json.dumps(meta, indent=2) + "\n")
        for path in [tmp, *tmp.iterdir()]:
            make_shareable(path)
        _install(tmp, cache_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.warning("cached %s at %s in %.1fs", gguf.name, cache_dir, time.perf_counter() - start)
    return cache_dir


def _install(tmp: Path, cache_dir: Path) -> None:
    """Move a finished folder into place; readers see either the old or the new one, whole."""
    old: Path | None = None
    if cache_dir.exists():
        old = cache_dir.with_name(f".{cache_dir.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(cache_dir, old)
    try:
        os.replace(tmp, cache_dir)
    except OSError:
        # Another process installed a cache at the same moment; theirs is as good as ours.
        if not cache_dir.exists():
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _source_stamp(gguf: Path, expected_sha256: str | None) -> dict[str, Any]:
    """What the cache was built from: the known sha256 of a bundled file (stable across
    reinstalls), else the file's path, size and modification time (cheap to compare)."""
    if expected_sha256 is not None:
        return {"sha256": expected_sha256}
    stat = gguf.stat()
    return {"path": str(gguf.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _cache_problem(cache_dir: Path, source: dict[str, Any]) -> str | None:
    """Why the cache cannot be used as it is (None: it looks fine; checksums come later)."""
    meta_path = cache_dir / CACHE_META
    if not meta_path.is_file():
        return "it has no metadata file" if cache_dir.exists() else "it does not exist"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return "its metadata file is unreadable"
    if meta.get("format") != CACHE_FORMAT:
        return f"it has cache format {meta.get('format')}, expected {CACHE_FORMAT}"
    if meta.get("source") != source:
        return "its source GGUF file changed"
    if not (cache_dir / CHECKSUMS).is_file():
        return "it has no checksum file"
    return None


def _write_checksums(folder: Path) -> None:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"no safetensors written to {folder}; check the disk space there "
                             "or set model.cache_dir=...")
    lines = [f"{sha256_file(f)}  {f.name}\n" for f in files]
    (folder / CHECKSUMS).write_text("".join(lines))


def _checksum_problem(folder: Path) -> str | None:
    """Compare the safetensors files with SHA256SUMS (the format `sha256sum -c` reads)."""
    try:
        lines = (folder / CHECKSUMS).read_text().splitlines()
    except OSError:
        return "its checksum file is unreadable"
    listed = set()
    for line in lines:
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        listed.add(name)
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if sha256_file(path) != digest:
            return f"{name} does not match its sha256 checksum"
    present = {p.name for p in folder.glob("*.safetensors")}
    if not listed or present - listed:
        return "its checksum file does not list all weight files"
    return None


def _load_pretrained(
    name: str, dtype: torch.dtype, trust_remote_code: bool, local: bool
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """`from_pretrained` for a folder or hub id; offline hub ids fail fast with a clear message."""
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if local:
        try:
            model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, **kwargs)
            return model, AutoTokenizer.from_pretrained(name, **kwargs)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"model.name_or_path: cannot load the model folder {name}: {exc}; give a folder "
                "with config.json, weights and tokenizer files, a .gguf file or a bundled name"
            ) from exc
    try:
        # Already in the Hugging Face cache: load that folder. (`from_pretrained(...,
        # local_files_only=True)` still asks the hub for an adapter config and retries for 23 s.)
        snapshot = snapshot_download(name, local_files_only=True)
    except (OSError, ValueError):
        snapshot = None
    if snapshot is not None:
        return _load_pretrained(snapshot, dtype, trust_remote_code, local=True)
    hint = (
        f"model.name_or_path {name!r} is not a bundled name ({', '.join([TINY_NAME, *BUNDLED])}), "
        "an existing directory or a .gguf file, so it was taken as a Hugging Face hub id"
    )
    unreachable = hub_unreachable()
    if unreachable:
        raise ModelLoadError(f"{hint}, but {unreachable}; use a bundled model or a local path")
    try:
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, **kwargs)
        return model, AutoTokenizer.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{hint}, and loading it failed: {exc}") from exc


def _looks_like_path(name: str) -> bool:
    """Hub ids are `name` or `org/name`; anything else with a slash is meant as a path."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def _ensure_pad_token(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Batching needs a pad token; eos is the usual stand-in (masked out of the loss anyway)."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError(
                "the tokenizer has neither a pad nor an eos token; use a model whose tokenizer "
                "defines one"
            )
        tokenizer.pad_token = tokenizer.eos_token
    generation = getattr(model, "generation_config", None)
    if generation is not None and generation.pad_token_id is None:
        generation.pad_token_id = tokenizer.pad_token_id
