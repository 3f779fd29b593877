"""The method catalogue: every name `methods:` accepts, its family, and which combine.

Built from the declarations of the method packages: every package under `retain/methods/` whose
`__init__.py` defines `METHODS` (a tuple of `methods.spec.MethodSpec`) is one entry, found by
listing the folder, so adding a method edits no file outside its package.

Combination rule (docs/methods/README.md): several methods run in one plugin list, batch
composition in the order they are named and their losses summed; at most one method of each
family, since two replay samplers, two general-replay losses, two adapter wrappers or two
regularisers would fight over the same rows, layers or penalty. Every refusal names the methods
and says what to choose.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from retain.config_base import Section
from retain.methods.spec import CONFLICT, FAMILY_ORDER, MethodSpec


@cache
def catalogue() -> tuple[MethodSpec, ...]:
    """Every declared method group: the reference runs first, then by family (FAMILY_ORDER,
    others after) and package name. Two packages declaring one name, or one section key with
    two classes, are refused here, at import of `retain.config`."""
    import retain.methods as package

    found: list[tuple[str, MethodSpec]] = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if not info.ispkg:
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for spec in getattr(module, "METHODS", ()):
            if not isinstance(spec, MethodSpec):
                raise TypeError(f"{module.__name__}.METHODS holds {spec!r}, not a MethodSpec")
            found.append((info.name, spec))

    def rank(item: tuple[str, MethodSpec]) -> tuple[int, str, str]:
        family = item[1].family
        if family is None:
            return (-1, "", item[0])
        place = FAMILY_ORDER.index(family) if family in FAMILY_ORDER else len(FAMILY_ORDER)
        return (place, family, item[0])

    specs = tuple(spec for _, spec in sorted(found, key=rank))  # stable: declaration order kept
    seen: dict[str, str] = {}
    sections: dict[str, type[Section]] = {}
    for package_name, spec in found:
        for name in spec.names:
            if name in seen:
                raise ValueError(f"method {name!r} is declared by {seen[name]} and {package_name}")
            seen[name] = package_name
        for key, cls in spec.sections.items():
            if sections.setdefault(key, cls) is not cls:
                raise ValueError(f"config section {key!r} is declared as two classes: "
                                 f"{sections[key].__name__} and {cls.__name__}")
    return specs


def spec_of(method: str) -> MethodSpec | None:
    return next((s for s in catalogue() if method in s.names), None)


def method_names() -> tuple[str, ...]:
    return tuple(name for spec in catalogue() for name in spec.names)


def families() -> dict[str, tuple[str, ...]]:
    """Family → its method names, in catalogue order."""
    out: dict[str, tuple[str, ...]] = {}
    for spec in catalogue():
        if spec.family is not None:
            out[spec.family] = out.get(spec.family, ()) + spec.names
    return out


def config_sections() -> dict[str, type[Section]]:
    """Every method config section, `{key: Section class}`, in catalogue order: the fields
    `retain.config.RunConfig` gets after its own."""
    out: dict[str, type[Section]] = {}
    for spec in catalogue():
        for key, cls in spec.sections.items():
            out.setdefault(key, cls)
    return out


def family_of(method: str) -> str | None:
    spec = spec_of(method)
    return spec.family if spec is not None else None


def sections_used(methods: list[str]) -> set[str]:
    """The method config sections a run with `methods` reads; the others cannot change it."""
    return {key for m in methods if (spec := spec_of(m)) is not None for key in spec.sections}


def method_sections() -> set[str]:
    """Every config section that belongs to a method."""
    return set(config_sections())


METHOD_NAMES = method_names()
FAMILIES = families()
REPLAY_METHODS = FAMILIES.get("replay", ())
"""Task replay from a buffer of past tasks' samples (docs/methods/replay.md)."""
GENERAL_REPLAY_METHODS = FAMILIES.get("general replay", ())
"""General-sample replay (docs/methods/gere.md)."""
ADAPTER_METHODS = FAMILIES.get("adapter", ())
"""Methods that own the LoRA layers (docs/methods/procl.md, seq_lora.md, olora.md)."""


def combination_errors(methods: list[str], finetune: str = "lora") -> list[str]:
    """Why `methods` cannot run together (empty when they can), each reason with its fix."""
    unknown = [m for m in methods if m not in METHOD_NAMES]
    if unknown:
        return [f"unknown {unknown}; allowed: {', '.join(METHOD_NAMES)}"]
    if not methods:
        return ["give at least one (e.g. [sequential])"]
    if len(set(methods)) != len(methods):
        return [f"{methods} names a method twice"]
    errors = []
    specs = {m: spec_of(m) for m in methods}
    for m, spec in specs.items():
        if spec is not None and spec.alone and len(methods) > 1:
            errors.append(f"{m} is a reference run and combines with nothing")
    plain = [m for m, spec in specs.items() if spec is not None and spec.plain]
    if plain and len(methods) > 1:
        errors.append(
            f"{plain[0]} means plain fine-tuning with no method; drop it from {'+'.join(methods)}"
        )
    for family, names in FAMILIES.items():
        chosen = [m for m in methods if m in names]
        if len(chosen) > 1:
            what = CONFLICT.get(family, f"are alternative {family} methods")
            errors.append(f"{chosen} {what}; choose one")
    lora = [m for m, spec in specs.items() if spec is not None and spec.needs_lora]
    if lora and finetune != "lora":
        errors.append(
            f"{lora[0]} trains LoRA adapters and needs model.finetune: lora (got {finetune})"
        )
    return errors
