"""What a method package declares about itself: `METHODS`, a tuple of `MethodSpec`.

Each package under `retain/methods/` lists its method names, their family, the config sections
they read (the pydantic `Section` classes beside its code) and a builder in its `__init__.py`;
`methods/names.py` collects the declarations, and the config model, the combination rules,
`retain config` and `docs/config.md` are built from them (docs/adding-a-method.md).

This module imports nothing heavy: `retain.config` reads the declarations at import time, so a
package's `__init__.py` imports its config classes and this module only, and its builder imports
the plugin when a run uses it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from retain.config_base import Section

if TYPE_CHECKING:
    from retain.config_sections import CoreConfig
    from retain.methods.base import Plugin

Builder = Callable[["CoreConfig", str], "Plugin | None"]
"""`build(config, method)`: the plugin of one of the spec's names; None for no plugin."""

PlainWhen = Callable[["CoreConfig", str], bool]
"""`plain_when(config, method)`: True where the method builds no plugin under `config`, so its
run is `sequential`'s (a bench that ran `sequential` judges the method's claims on that row)."""


@dataclass(frozen=True)
class PaperClaim:
    """One ordering a method's paper reports on its primary score: `better` above `worse`
    (relation `>`), or the two level (`≈`). `retain bench` tests each claim whose two methods
    it ran (`bench/claims.py`), so a user sees whether the paper's ordering holds on the stream."""

    better: str
    worse: str
    paper: str
    relation: Literal[">", "≈"] = ">"

    @property
    def text(self) -> str:
        return f"{self.better} {self.relation} {self.worse}"


@dataclass(frozen=True)
class MethodSpec:
    """One group of method names that share a family, config sections and a builder.

    `family`: at most one method of a family runs in a run (two replay samplers, two
    general-replay losses, two adapter wrappers or two regularisers would fight over the same
    rows, layers or penalty); None for the reference runs, which have rules of their own.
    `sections`: the config sections these names read, `{key: Section class}`; a run's other
    method sections cannot change it (`relevant_config`). `needs_lora`: only with
    `model.finetune: lora`. `alone`: combines with nothing (`multitask`). `plain`: no method at
    all (`sequential`), so naming it beside another is refused as a contradiction. `claims`:
    the orderings the method's paper reports, tested by every bench that runs both sides.
    `plain_when`: where one of the names is no method at all under a config (`seq_lora`
    without the adapter MLP), its builder's own test, so a bench can read `sequential` for it.
    """

    names: tuple[str, ...]
    family: str | None
    build: Builder
    sections: Mapping[str, type[Section]] = field(default_factory=dict)
    summary: str = ""
    needs_lora: bool = False
    alone: bool = False
    plain: bool = False
    claims: tuple[PaperClaim, ...] = ()
    plain_when: PlainWhen | None = None

    def __post_init__(self) -> None:
        if not self.names:
            raise ValueError("a MethodSpec needs at least one name")
        for key, section in self.sections.items():
            if not (isinstance(section, type) and issubclass(section, Section)):
                raise TypeError(f"section {key!r} of {self.names}: {section!r} is no Section")


FAMILY_ORDER = ("replay", "general replay", "adapter", "regularisation")
"""Families in the order the catalogue lists them (and config sections appear); a family not
named here comes after these, so a new family needs no edit outside its package."""

CONFLICT = {"adapter": "both replace the model's adapter layers"}
"""How a refusal of two methods of one family explains itself; default: 'are alternative
<family> methods'."""
