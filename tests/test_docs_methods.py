"""The method pages stay complete: every name the catalogue declares appears in the index of
docs/methods/ with a page, every page a method doc links exists, and the docs and docstrings
cite those pages rather than files outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

from retain.methods.names import method_names

ROOT = Path(__file__).resolve().parents[1]
METHODS_DIR = ROOT / "docs" / "methods"
LINK = re.compile(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)")


def index_rows() -> dict[str, str]:
    """`name → page` from the index table (first code span cell listing names, then the page)."""
    rows: dict[str, str] = {}
    for line in (METHODS_DIR / "README.md").read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[2].startswith("["):
            continue
        page = LINK.search(cells[2])
        if page is None:
            continue
        for name in re.findall(r"`([a-z_0-9]+)`", cells[1]):
            rows[name] = page.group(1)
    return rows


def test_every_declared_method_has_a_page_in_the_index() -> None:
    rows = index_rows()
    missing = [name for name in method_names() if name not in rows]
    assert not missing, f"docs/methods/README.md lists no page for {missing}"
    for name, page in rows.items():
        assert (METHODS_DIR / page).is_file(), f"{name}: docs/methods/{page} does not exist"


def test_links_between_method_pages_resolve() -> None:
    broken = []
    for page in sorted(METHODS_DIR.glob("*.md")):
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if not (page.parent / target).resolve().is_file():
                broken.append(f"{page.name} -> {target}")
    assert not broken, f"broken links: {broken}"


def test_docstrings_and_docs_cite_no_specs_outside_the_repository() -> None:
    cited = []
    for path in [*(ROOT / "src").rglob("*.py"), ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "shared/specs" in line:
                cited.append(f"{path.relative_to(ROOT)}:{number}")
    assert not cited, f"cite docs/methods/<method>.md instead: {cited}"


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def test_links_into_results_name_its_headings() -> None:
    results = ROOT / "docs" / "results.md"
    known = anchors(results.read_text(encoding="utf-8"))
    missing = []
    for page in [*sorted(METHODS_DIR.glob("*.md")), ROOT / "docs" / "statistics.md", results]:
        for anchor in re.findall(r"results\.md#([\w\-]+)\)", page.read_text(encoding="utf-8")):
            if anchor not in known:
                missing.append(f"{page.name}: #{anchor}")
    for anchor in re.findall(r"\]\(#([\w\-]+)\)", results.read_text(encoding="utf-8")):
        if anchor not in known:  # the table of contents
            missing.append(f"results.md: #{anchor}")
    assert not missing, f"docs/results.md has no such heading: {missing}"
