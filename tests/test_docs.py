"""The documentation: plain Markdown, working relative links and anchors, and a reference that matches the code."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from urllib.parse import unquote

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

from inferno.config import reference_docs
from tests.conftest import REPO

DOCS = REPO / "docs"
PAGES = sorted(
    {
        *DOCS.rglob("*.md"),
        *(REPO / "deploy").rglob("*.md"),
        REPO / "README.md",
        REPO / "CHANGELOG.md",
    }
)
MARKDOWN = MarkdownIt("commonmark").enable("table")


def name(path: Path) -> str:
    """The page's path in the repository."""
    return path.relative_to(REPO).as_posix()


@cache
def tokens(path: Path) -> tuple[Token, ...]:
    """The parsed page, inline tokens flattened in."""
    flat: list[Token] = []
    for token in MARKDOWN.parse(path.read_text(encoding="utf-8")):
        flat.append(token)
        flat.extend(token.children or ())
    return tuple(flat)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """The anchors of a page's headings (repeated headings get -1, -2, ... as on GitHub)."""
    found: list[str] = []
    parsed = MARKDOWN.parse(path.read_text(encoding="utf-8"))
    for i, token in enumerate(parsed):
        if token.type == "heading_open":
            text = "".join(c.content for c in parsed[i + 1].children or () if c.type in ("text", "code_inline"))
            base = slug(text)
            anchor, n = base, 0
            while anchor in found:
                n += 1
                anchor = f"{base}-{n}"
            found.append(anchor)
    return frozenset(found)


def links(path: Path) -> list[str]:
    """Every link and image target on a page."""
    targets = []
    for token in tokens(path):
        if token.type == "link_open":
            targets.append(str(token.attrs["href"]))
        elif token.type == "image":
            targets.append(str(token.attrs["src"]))
    return targets


def broken_links(path: Path) -> list[str]:
    """The relative links of a page whose file or #anchor does not exist."""
    broken = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # http:, https:, mailto: ...
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {name_or_path(linked)}")
    return broken


def test_pages_are_found() -> None:
    """The walk covers the docs, the README, the changelog and deploy/."""
    names = {name(p) for p in PAGES}
    assert {
        "README.md",
        "CHANGELOG.md",
        "deploy/README.md",
        "docs/installation.md",
        "docs/reference/settings.md",
    } <= names


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_page_is_plain_markdown_with_working_links(page: Path) -> None:
    """No raw HTML, and every relative link points to an existing file and heading."""
    html = [t.content.strip() for t in tokens(page) if t.type in ("html_block", "html_inline")]
    assert html == [], f"{name(page)} embeds HTML"
    assert broken_links(page) == []


def test_link_check_catches_a_missing_file_and_a_missing_anchor(tmp_path: Path) -> None:
    """A link to an absent page or heading is reported; a good one and an external one are not."""
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other\n\n## Its `code` part\n")
    page.write_text(
        "# Page\n\n[a](other.md#its-code-part) [b](other.md#nope) [c](gone.md) [d](#page) "
        "[e](https://example.com/x#y) [f](#missing)\n"
    )
    tokens.cache_clear()
    anchors.cache_clear()
    assert broken_links(page) == [
        "other.md#nope: no heading #nope in " + name_or_path(tmp_path / "other.md"),
        "gone.md: no such file",
        "#missing: no heading #missing in " + name_or_path(page),
    ]


def name_or_path(path: Path) -> str:
    """``name`` for pages in the repository, the path itself for others (tests' temporary pages)."""
    try:
        return name(path)
    except ValueError:
        return path.as_posix()


def test_slug_follows_github() -> None:
    """Anchors drop punctuation and keep hyphens and underscores."""
    assert slug("Several replicas: leader election") == "several-replicas-leader-election"
    assert slug("Settings (`TunerSettings`)") == "settings-tunersettings"
    assert slug("limits.max_num_seqs") == "limitsmax_num_seqs"


@pytest.mark.parametrize("file_name", sorted(reference_docs()))
def test_checked_in_reference_matches_the_code(file_name: str) -> None:
    """docs/reference is what `inferno schema --reference docs/reference` generates now (run it after a change)."""
    assert (DOCS / "reference" / file_name).read_text(encoding="utf-8") == reference_docs()[file_name]


def test_reference_lists_every_setting_and_system_key() -> None:
    """Every setting (with its env var) and every limit appears in settings.md; system keys in system.md."""
    from inferno.config import LimitSettings, Settings
    from inferno.spec import ServerSpec

    text = reference_docs()["settings.md"]
    for field in Settings.model_fields:
        assert f"| `{field}` | `INFERNO_{field.upper()}` |" in text
    for field in LimitSettings.model_fields:
        assert f"`INFERNO_LIMITS__{field.upper()}`" in text
    system = reference_docs()["system.md"]
    for info in ServerSpec.model_fields.values():
        assert f"| `{info.alias}` |" in system or info.alias is None


def test_readme_and_architecture_link_the_operations_docs() -> None:
    """README.md and docs/architecture.md link installation, operations, troubleshooting, comparison and reference."""
    wanted = {"installation.md", "operations.md", "troubleshooting.md", "comparison.md", "reference/settings.md"}
    for page in (REPO / "README.md", DOCS / "architecture.md"):
        linked = {(page.parent / t.partition("#")[0]).resolve() for t in links(page) if not t.startswith("http")}
        assert {(DOCS / w).resolve() for w in wanted} <= linked, name(page)
