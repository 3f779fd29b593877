"""The method catalogue: every name `methods:` accepts, its family, and which combine.

Combination rule (architecture.md): several methods run in one plugin list, batch composition
in the order they are named and their losses summed; at most one method of each family, since
two replay samplers, two general-replay losses or two adapter wrappers would fight over the same
rows or layers. Every refusal names the methods and says what to choose.
"""

from __future__ import annotations

REFERENCE_METHODS = ("sequential", "none", "multitask")
"""`sequential` (alias `none`): plain fine-tuning; `multitask`: joint training, the upper bound."""

REPLAY_METHODS = (
    "fixed",
    "loss_triggered",
    "accuracy_triggered",
    "mssr_spl",
    "mssr_sch",
    "mssr",
)
"""Task replay from a buffer of past tasks' samples (replay-mssr.md)."""

GENERAL_REPLAY_METHODS = ("gere", "gere_lm", "gere_kl", "gere_l1", "gere_l2")
"""General-sample replay (gere.md): `gere` takes `general.loss` (default `tm`, the method);
`gere_<loss>` fixes the loss, for the paper's comparison baselines."""

ADAPTER_METHODS = (
    "seq_lora",
    "olora",
    "procl",
    "procl_no_w_orig",
    "procl_no_consolidation",
    "procl_random_routing",
    "procl_uniform_routing",
)
"""Methods that own the LoRA layers (procl.md); `procl_<ablation>` are the paper's ablations."""

METHOD_NAMES = REFERENCE_METHODS + REPLAY_METHODS + GENERAL_REPLAY_METHODS + ADAPTER_METHODS

FAMILIES = {
    "replay": REPLAY_METHODS,
    "general replay": GENERAL_REPLAY_METHODS,
    "adapter": ADAPTER_METHODS,
}


FAMILY_SECTIONS = {
    "replay": ("replay",),
    "general replay": ("general",),
    "adapter": ("procl",),
}
"""Config sections each family reads; MSSR also reads `mssr`, O-LoRA `olora` (not `procl`)."""


def sections_used(methods: list[str]) -> set[str]:
    """The method config sections a run with `methods` reads; the others cannot change it."""
    used: set[str] = set()
    for method in methods:
        if method == "olora":
            used.add("olora")
        elif (family := family_of(method)) is not None:
            used.update(FAMILY_SECTIONS[family])
        if method.startswith("mssr"):
            used.add("mssr")
    return used


def method_sections() -> set[str]:
    """Every config section that belongs to a method family."""
    return {s for sections in FAMILY_SECTIONS.values() for s in sections} | {"mssr", "olora"}


def family_of(method: str) -> str | None:
    for family, names in FAMILIES.items():
        if method in names:
            return family
    return None


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
    if "multitask" in methods and len(methods) > 1:
        errors.append("multitask is a reference run and combines with nothing")
    plain = [m for m in methods if m in ("sequential", "none")]
    if plain and len(methods) > 1:
        errors.append(
            f"{plain[0]} means plain fine-tuning with no method; drop it from {'+'.join(methods)}"
        )
    for family, names in FAMILIES.items():
        chosen = [m for m in methods if m in names]
        if len(chosen) > 1:
            what = (
                "both replace the model's adapter layers"
                if family == "adapter"
                else f"are alternative {family} methods"
            )
            errors.append(f"{chosen} {what}; choose one")
    adapters = [m for m in methods if m in ADAPTER_METHODS]
    if adapters and finetune != "lora":
        errors.append(
            f"{adapters[0]} trains LoRA adapters and needs model.finetune: lora "
            f"(got {finetune})"
        )
    return errors
