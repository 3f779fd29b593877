"""Page helpers shared by the run report and the comparison: escaping, number formats, tables.

Every value that reaches a page goes through `e` (task names come from user data and may hold
markup), and every number through `fmt` / `ci_text`, so the two pages show numbers alike.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 80em; color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
td.c { text-align: center; }
th { background: #f3f3f3; }
td.l, th.l { text-align: left; }
.def { text-align: left; color: #555; font-size: 0.9em; max-width: 40em; }
td.best { background: #d8f0d8; font-weight: bold; }
td.sig { font-weight: bold; }
td.better { color: #176117; }
td.worse { color: #a31515; }
span.ci { color: #666; font-size: 0.9em; white-space: nowrap; }
span.dir { color: #555; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; }
.note { color: #a50; }
.noise { background: #fff4e0; border-left: 4px solid #e0a030; padding: 0.5em 1em; }
.meta { color: #555; }
"""


def e(value: Any) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """Compact display: n/a for undefined, 4 significant digits for floats."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if hasattr(value, "item") and not isinstance(value, list | tuple | dict):
        return fmt(value.item())
    if isinstance(value, list | tuple):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return str(value)


def points(value: float | None, signed: bool = False) -> str:
    """A metric in score points with two decimals (a CI makes more digits meaningless)."""
    if value is None or not math.isfinite(value):
        return "n/a"
    value = round(value, 2) + 0.0  # no "-0.00" from a difference of -1e-15
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def ci_text(low: float | None, high: float | None, signed: bool = False) -> str:
    """`[low, high]`, or empty when there is no interval."""
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return ""
    return f"[{points(low, signed)}, {points(high, signed)}]"


def value_ci_html(
    value: float | None, low: float | None, high: float | None, signed: bool = False
) -> str:
    """Value with its interval in a lighter span, for table cells."""
    interval = ci_text(low, high, signed)
    span = f'&nbsp;<span class="ci">{e(interval)}</span>' if interval else ""
    return f"{e(points(value, signed))}{span}"


Cell = str | tuple[str, str]
"""Cell HTML, or (HTML, CSS class) to mark it (best run, significant difference)."""


def table(head: Sequence[Cell], rows: Iterable[Sequence[Cell]], left: int = 1) -> str:
    """A table from already-escaped cell HTML; the first `left` columns are left-aligned."""

    def cell(tag: str, k: int, content: Cell) -> str:
        text, cls = content if isinstance(content, tuple) else (content, "")
        classes = " ".join(c for c in ("l" if k < left else "", cls) if c)
        attr = f' class="{classes}"' if classes else ""
        return f"<{tag}{attr}>{text}</{tag}>"

    head_html = "".join(cell("th", k, h) for k, h in enumerate(head))
    body = "".join(
        "<tr>" + "".join(cell("td", k, c) for k, c in enumerate(row)) + "</tr>" for row in rows
    )
    return f"<table><tr>{head_html}</tr>{body}</table>"


def figure(src: str, caption: str) -> str:
    return (
        f'<figure><img src="{e(src)}" alt="{e(caption)}">'
        f"<figcaption>{e(caption)}</figcaption></figure>"
    )


def page(title: str, parts: Iterable[str]) -> str:
    body = "\n".join(p for p in parts if p)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def plain_value(value: Any) -> str:
    """Settings such as decoding as `k=v, ...`; strings as they are, the rest as JSON-ish."""
    if isinstance(value, dict):
        return ", ".join(f"{k}={plain_value(v)}" for k, v in value.items())
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)
