"""Every YAML retain reads goes through here: bounded, strict and with messages that point.

A config, stream file or run directory may come from someone else, so reading one must not be
an attack: alias expansion is bounded (a 600-byte alias bomb expands to gigabytes), duplicate
keys are refused (YAML keeps the last silently), non-UTF-8 bytes are named with their file and
byte offset, and a message quotes at most a short excerpt of a value (`excerpt`).
"""

from __future__ import annotations

import re
import reprlib
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

MAX_ALIAS_NODES = 10_000
"""How many nodes alias expansion may add to a document: configs need a handful."""
EXCERPT_CHARS = 60


class YamlError(yaml.YAMLError, ValueError):
    """A YAML text retain refuses; the message is one line naming the source and position."""


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> str:
    """`repr(value)`, cut to about `limit` characters (a message never quotes a whole tree)."""
    short = reprlib.Repr()  # stops early in long strings and big trees: no 2 GB `repr`
    short.maxstring = short.maxother = limit
    short.maxlist = short.maxdict = short.maxtuple = short.maxset = 4
    short.maxlevel = 3
    text = short.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _expanded_size(root: Node) -> tuple[int, int]:
    """(nodes with every alias expanded, distinct nodes); raises YamlError for a cycle."""
    sizes: dict[int, int] = {}
    busy: set[int] = set()

    def size(node: Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in busy:
            raise YamlError("a recursive alias (a node that contains itself)")
        busy.add(key)
        total = 1
        if isinstance(node, SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        busy.discard(key)
        sizes[key] = total
        return total

    return size(root), len(sizes)


class BoundedLoader(yaml.SafeLoader):
    """SafeLoader with bounded aliases, refused duplicate keys, and `1e-4` read as a float
    (YAML 1.1 wants `1.0e-4`; YAML 1.2 does not)."""

    def construct_document(self, node: Node) -> Any:
        expanded, distinct = _expanded_size(node)
        if expanded - distinct > MAX_ALIAS_NODES:
            raise YamlError(
                f"aliases expand to {expanded} nodes (at most {MAX_ALIAS_NODES} more than "
                "written are allowed); write the values out instead of nesting aliases"
            )
        return super().construct_document(node)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` then a key of base is an override, not a duplicate
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader refuses it below
                continue
            if first is not None:
                raise YamlError(
                    f"line {line}: duplicate key {excerpt(key)} (first on line {first}); "
                    "keep one"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


BoundedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)

_BOOL = "tag:yaml.org,2002:bool"


class Yaml12BoolLoader(BoundedLoader):
    """The bounded loader with YAML 1.2 booleans: only true/false (stream files: labels such as
    `yes`/`no` stay text)."""


Yaml12BoolLoader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag != _BOOL]
    for first, resolvers in BoundedLoader.yaml_implicit_resolvers.items()
}
Yaml12BoolLoader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_yaml(text: str, source: str = "", loader: type[BoundedLoader] = BoundedLoader) -> Any:
    """`text` as data; YamlError (one line, naming `source` and the line) for what is refused."""
    where = f"{source}: " if source else ""
    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader subclass
    except YamlError as exc:
        raise YamlError(f"{where}{exc}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
        problem = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise YamlError(f"{source or 'the text'} is not valid YAML: {at}{problem}") from None
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())
        raise YamlError(f"{source or 'the text'} is not valid YAML: {problem}") from None
    except RecursionError:
        raise YamlError(f"{where}nested too deeply") from None


def read_text(path: Path, what: str = "YAML file") -> str:
    """The UTF-8 text of `path` (a leading BOM dropped); ValueError naming the byte offset of
    bytes that are no UTF-8, OSError for a file that cannot be read."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(21, f"{path} is a directory; expected a {what}", str(path))
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise YamlError(
            f"{path}: byte {exc.start} (line {line}) is not UTF-8 ({data[exc.start]:#04x}); "
            f"save the {what} as UTF-8"
        ) from None


def load_yaml_file(
    path: Path, what: str = "YAML file", loader: type[BoundedLoader] = BoundedLoader
) -> Any:
    """The data of a YAML file, read with `read_text` and `load_yaml`."""
    return load_yaml(read_text(path, what), str(path), loader)
