"""The reference of every config key (type, default, meaning), generated from the config model.

Keys, types, limits and defaults are read from the pydantic models in `retain.config`, so the
reference cannot drift from the code; a key's meaning is its `Field(description=...)`, or for
keys that have none yet the note in `NOTES` (a test keeps `NOTES` to existing, undescribed keys).
`docs/config.md` is this module's output: `python -m retain.config_reference --write`.
"""

from __future__ import annotations

import argparse
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from retain.config import METHOD_NAMES, RunConfig
from retain.methods.names import FAMILIES

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "config.md"

NOTES: dict[str, str] = {
    "name": "name of the run; its directory is `output_dir/name`",
    "output_dir": "folder that holds the run directories",
    "seed": "run seed: new weights, batch order, replay draws (data subsamples use "
    "`data.subsample_seed`)",
    "methods": "what this run trains with, from: " + ", ".join(METHOD_NAMES) + "; at most one "
    "method of each family ("
    + "; ".join(f"{family}: {', '.join(names)}" for family, names in FAMILIES.items())
    + "), and `multitask` (joint training, a reference) combines with nothing",
    "model.name_or_path": "`tiny-random`, a bundled name (`smollm2-135m`, `gemma3-270m`), a "
    "`.gguf` file, a local model folder or a Hugging Face id",
    "model.finetune": "`lora`: train LoRA adapters only; `full`: every weight",
    "model.lora.r": "LoRA rank",
    "model.lora.alpha": "LoRA scale α (updates are scaled by α / r)",
    "model.lora.dropout": "dropout on the LoRA branch",
    "model.lora.target_modules": "names of the modules that get adapters",
    "model.dtype": "weight dtype; `auto`: float32 on CPU, bfloat16 on GPUs that have it, else "
    "float16",
    "model.trust_remote_code": "run code shipped with a Hub model (off unless you trust it)",
    "model.cache_dir": "where converted models are cached; null: `$RETAIN_CACHE_DIR`, else "
    "`~/.cache/retain/models`",
    "train.steps_per_task": "optimizer steps per task (null to use `epochs_per_task`); a "
    "task's own `steps`/`epochs` in its stream file take precedence",
    "train.epochs_per_task": "passes over each task's train split instead of a step count",
    "train.batch_size": "rows per micro-batch (per process)",
    "train.grad_accum": "micro-batches per optimizer step",
    "train.lr": "peak learning rate (AdamW, warm-up then cosine, restarted for each task); a "
    "task's own `lr` in its stream file takes precedence",
    "train.warmup_ratio": "fraction of each task's steps spent warming up",
    "train.weight_decay": "AdamW weight decay",
    "train.max_grad_norm": "gradient-norm clip; null: no clipping",
    "train.mixed_precision": "`auto`: bf16 (else fp16) on GPUs, none on CPU",
    "train.log_every": "steps between step records in `log.jsonl`",
    "train.progress": "show progress bars",
    "eval.batch_size": "prompts per evaluation batch",
    "eval.general.enabled": "also score the general-ability suite at every stage",
    "eval.general.mmlu_per_subject": "MMLU questions per subject (seeded); 0: no MMLU",
    "eval.general.mmlu_subjects": "MMLU subjects to use; null: all 57",
    "eval.general.arc_easy": "ARC-Easy test questions; 0: none",
    "eval.general.wikitext_paragraphs": "WikiText-2 test paragraphs for perplexity; 0: none",
    "replay.buffer_size": "samples the replay buffer holds, an equal quota per finished task",
    "replay.unit_fraction": "a unit as a fraction of the task's steps, when `unit_steps` is null",
    "replay.event_units": "length of a replay event, in units",
    "replay.loss_ema_decay": "`loss_triggered`: decay of the training-loss EMA",
    "replay.loss_delta": "`loss_triggered`: an event starts when the loss exceeds (1 + δ) × EMA",
    "replay.probe_every_units": "`accuracy_triggered`: units between probes of finished tasks",
    "replay.probe_size": "`accuracy_triggered`: probe examples per finished task",
    "replay.probe_drop": "`accuracy_triggered`: points below a task's best probe score that "
    "start an event",
    "mssr.loss_ema": "decay of each sample's loss EMA",
    "mssr.quantile_low": "lower running quantile that normalises the loss EMA to [0, 1]",
    "mssr.quantile_high": "upper running quantile of that normalisation",
    "mssr.k": "steepness k of the difficulty sigmoid φ",
    "mssr.c": "midpoint c of φ",
    "mssr.alpha": "base hazard α of memory decay",
    "mssr.gamma_d": "weight γ_d of difficulty in the hazard",
    "mssr.s_min": "lowest stability S",
    "mssr.s_max": "highest stability S",
    "mssr.eta_s": "stability gain η_s of a review",
    "mssr.beta_s": "exponent β_s of (S_max − S) in that gain",
    "mssr.rho": "decay ρ of the gain with the time since the last review",
    "mssr.gamma_s": "exponent γ_s of (1 − m) in the gain",
    "mssr.zeta": "sampler sharpness ζ: p ∝ m^(−ζ); 0: uniform",
    "mssr.refresh_units": "units after which the memory state is refreshed in any case",
    "mssr.eta_p": "growth η_p of the expanding replay intervals",
    "mssr.rho_p": "decay ρ_p of that growth with the event index",
    "mssr.first_interval_units": "first replay interval, in units",
    "mssr.lam0": "replay fraction λ at the start",
    "mssr.lam_min": "floor of the decaying λ",
    "mssr.beta_r": "decay rate β_r of λ, per step",
}
"""Meanings of keys whose field has no description yet; move them into `Field(description=)`."""


@dataclass(frozen=True)
class KeyDoc:
    key: str
    type: str
    default: str
    meaning: str


def _section(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _type_text(annotation: Any) -> str:
    """`int`, `text or null`, `one of: lora, full`, `list of text`."""
    origin = get_origin(annotation)
    if origin is Literal:
        return "one of: " + ", ".join(str(a) for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        parts = [a for a in get_args(annotation) if a is not type(None)]
        text = " or ".join(_type_text(a) for a in parts)
        return text + " or null" if len(parts) < len(get_args(annotation)) else text
    if origin is list:
        (item,) = get_args(annotation) or (Any,)
        return f"list of {_type_text(item)}"
    names = {str: "text", int: "int", float: "number", bool: "bool"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _limits(field: FieldInfo) -> str:
    """`> 0`, `≥ 0, < 1`: the bounds a value must keep."""
    signs = {at.Gt: (">", "gt"), at.Ge: ("≥", "ge"), at.Lt: ("<", "lt"), at.Le: ("≤", "le")}
    out = []
    for item in field.metadata:
        for kind, (sign, attr) in signs.items():
            if isinstance(item, kind):
                out.append(f"{sign} {getattr(item, attr)}")
    return ", ".join(out)


def _value_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value_text(v) for v in value) + "]"
    return str(value)


def _default_text(field: FieldInfo) -> str:
    extra = field.json_schema_extra
    if isinstance(extra, dict) and "default_text" in extra:
        return str(extra["default_text"])
    if field.default_factory is not None:
        return _value_text(field.default_factory())  # type: ignore[call-arg]
    return "(required)" if field.default is PydanticUndefined else _value_text(field.default)


def config_keys(model: type[BaseModel] = RunConfig, prefix: str = "") -> Iterator[KeyDoc]:
    """Every leaf key of `model`, dotted, in declaration order (sections expanded in place)."""
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        section = _section(field.annotation)
        if section is not None:
            yield from config_keys(section, f"{key}.")
            continue
        limits = _limits(field)
        kind = _type_text(field.annotation) + (f" ({limits})" if limits else "")
        meaning = field.description or NOTES.get(key, "")
        yield KeyDoc(key, kind, _default_text(field), meaning)


def _sections(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, type[BaseModel]]]:
    yield prefix.rstrip("."), model
    for name, field in model.model_fields.items():
        section = _section(field.annotation)
        if section is not None:
            yield from _sections(section, f"{prefix}{name}.")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def config_reference() -> str:
    """The Markdown reference of every config key, one table per section."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from the config model (`retain.config.RunConfig`) by",
        "`python -m retain.config_reference --write`: do not edit by hand.",
        "Every key can be set in a YAML config file, or as `key=value` after it on the command",
        "line (`retain run config.yaml train.lr=1e-4 data.max_train_per_task=64`); unknown keys",
        "are refused with the keys allowed there. Task streams of your own (`data.stream`) are",
        'described in the README, section "Your own stream (YAML)".',
    ]
    keys = list(config_keys())
    for path, model in _sections(RunConfig):
        own = [k for k in keys if k.key.rpartition(".")[0] == path]
        if not own:
            continue
        title = f"`{path}`" if path else "Top level"
        lines += ["", f"## {title}", ""]
        doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        if path and doc and not doc.startswith(model.__name__ + "("):
            lines += [doc, ""]
        lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for k in own:
            lines.append(
                f"| `{k.key}` | {_cell(k.type)} | `{_cell(k.default)}` | {_cell(k.meaning)} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Print the reference, or write it to docs/config.md with --write."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--write", action="store_true", help=f"write {DOC_PATH}")
    args = parser.parse_args(argv)
    text = config_reference()
    if args.write:
        DOC_PATH.write_text(text, encoding="utf-8")
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
