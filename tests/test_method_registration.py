"""Methods register themselves: the catalogue, config model and reference follow the packages'
`METHODS` declarations, so a method added as one folder is known everywhere."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from retain.config import RunConfig, load_config
from retain.config_reference import config_reference
from retain.methods import names
from retain.methods.spec import MethodSpec

SRC = Path(__file__).resolve().parents[1] / "src"


def test_every_declared_name_is_accepted_and_its_sections_are_config_fields() -> None:
    for spec in names.catalogue():
        for key, cls in spec.sections.items():
            assert RunConfig.model_fields[key].annotation is cls
    assert set(names.method_sections()) <= set(RunConfig.model_fields)
    assert tuple(n for s in names.catalogue() for n in s.names) == names.METHOD_NAMES
    for family, members in names.FAMILIES.items():
        assert all(names.family_of(m) == family for m in members)


def test_sections_used_follow_the_declarations() -> None:
    assert names.sections_used(["fixed"]) == {"replay"}
    assert names.sections_used(["mssr", "gere"]) == {"replay", "mssr", "general"}
    assert names.sections_used(["olora"]) == {"olora"}
    assert names.sections_used(["seq_lora"]) == {"procl"}
    assert names.sections_used(["sequential"]) == set()


def test_lora_methods_are_refused_under_full_finetuning() -> None:
    errors = names.combination_errors(["procl"], "full")
    assert errors and "needs model.finetune: lora" in errors[0]
    assert names.combination_errors(["fixed"], "full") == []


def test_a_spec_refuses_a_section_that_is_no_config_section() -> None:
    with pytest.raises(TypeError, match="no Section"):
        MethodSpec(names=("x",), family="y", build=lambda c, m: None,
                   sections={"x": dict})  # type: ignore[dict-item]


PLUGIN_PACKAGE = '''
from pydantic import Field
from retain.config_base import Section
from retain.methods.spec import MethodSpec


class ToyConfig(Section):
    """Toy settings."""

    strength: float = Field(2.5, gt=0, description="how strong the toy is")


def build(config, method):
    from retain.methods.base import Plugin

    plugin = Plugin(config)
    plugin.name = f"{method}:{config.toy.strength}"
    return plugin


METHODS = (MethodSpec(names=("toy", "toy_b"), family="toys", build=build,
                      sections={"toy": ToyConfig}),)
'''

PROBE = '''
import sys
import retain.methods as m
m.__path__.append(sys.argv[1])
from retain.config import ConfigError, load_config
from retain.config_reference import config_reference
from retain.methods.registry import build_plugins
cfg = load_config(None, ["methods=[fixed,toy]", "toy.strength=4"])
print("plugins", [p.name for p in build_plugins(cfg)])
print("reference", "| `toy.strength` | number (> 0) | `2.5` | how strong the toy is |"
      in config_reference())
try:
    load_config(None, ["methods=[toy,toy_b]"])
except ConfigError as exc:
    print("refused", "are alternative toys methods" in str(exc))
'''


def test_a_new_package_is_found_without_editing_any_other_file(tmp_path: Path) -> None:
    """A folder with a METHODS declaration, on the package path, is a method: the config gets
    its section, the reference documents it, the family rule applies, its builder runs."""
    package = tmp_path / "toymethod"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent(PLUGIN_PACKAGE))
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "plugins ['fixed', 'toy:4.0']" in lines
    assert "reference True" in lines and "refused True" in lines


def test_the_toy_is_not_known_to_the_real_catalogue() -> None:
    assert "toy" not in names.METHOD_NAMES and "toy" not in RunConfig.model_fields
    assert "## `toy`" not in config_reference()
    with pytest.raises(Exception, match="unknown"):
        load_config(None, ["methods=[toy]"])


def test_the_regularisation_family_combines_with_replay_and_adapters_not_with_itself() -> None:
    assert names.FAMILIES["regularisation"] == ("ewc", "lwf")
    for ok in (["fixed", "ewc"], ["mssr", "gere", "procl", "lwf"], ["olora", "ewc"]):
        assert names.combination_errors(ok) == [], ok
    (error,) = names.combination_errors(["ewc", "lwf"])
    assert "are alternative regularisation methods" in error
    assert names.combination_errors(["ewc"], "full") == []  # EWC needs no LoRA
    cfg = load_config(None, ["methods=[fixed,lwf]"])
    assert names.sections_used(cfg.methods) == {"replay", "lwf"}
