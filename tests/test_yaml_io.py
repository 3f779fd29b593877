"""The one YAML reader: ordinary anchors still work, bombs, cycles and duplicate keys do not."""

from __future__ import annotations

from pathlib import Path

import pytest

from retain.yaml_io import MAX_ALIAS_NODES, YamlError, excerpt, load_yaml, load_yaml_file


def test_modest_anchors_and_merge_keys_still_work() -> None:
    text = "base: &b {lr: 1e-4, r: 8}\na: *b\nb:\n  <<: *b\n  r: 4\n"
    assert load_yaml(text) == {"base": {"lr": 1e-4, "r": 8}, "a": {"lr": 1e-4, "r": 8},
                               "b": {"lr": 1e-4, "r": 4}}


def test_expansion_beyond_the_bound_is_refused_naming_the_source() -> None:
    width = int(MAX_ALIAS_NODES**0.5) + 2
    row = ", ".join(["x"] * width)
    text = f"row: &r [{row}]\ngrid: [{', '.join(['*r'] * width)}]\n"
    with pytest.raises(YamlError, match=r"my.yaml: aliases expand to \d+ nodes"):
        load_yaml(text, "my.yaml")


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(YamlError, match="recursive alias"):
        load_yaml("a: &a [1, *a]\n")


def test_duplicate_keys_in_a_flow_mapping_are_refused() -> None:
    with pytest.raises(YamlError, match="duplicate key 'a'"):
        load_yaml("{a: 1, a: 2}")


def test_excerpt_is_short_for_huge_values() -> None:
    assert len(excerpt("x" * 10**6)) <= 60 and len(excerpt([[1] * 1000] * 1000)) <= 60


def test_a_bom_is_dropped_and_a_syntax_error_gives_the_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes("\ufeffa: 1\n".encode())
    assert load_yaml_file(path) == {"a": 1}
    path.write_text("a: 1\nb: [\n")
    with pytest.raises(YamlError, match=r"c.yaml is not valid YAML: line 3"):
        load_yaml_file(path)
