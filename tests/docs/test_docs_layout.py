"""The docs read as a guide (#20 item 9): every page has sections (## headings, so its table
of contents can be linked), and no code line is wider than the rendered code block."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "docs").rglob("*.md"))
# What a code block of the site shows without scrolling: docs/assets/extra.css widens the
# content to 68rem, so 88 characters of code fit beside both sidebars (navigation and table
# of contents) on a 1360 px wide window (13.6 px monospace, 8.2 px a character).
MAX_CODE_LINE = 88
_FENCE = re.compile(r"^```[^\n]*\n(?P<code>.*?)^```", re.DOTALL | re.MULTILINE)


def _page_id(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_page_has_sections(page: Path) -> None:
    """Before: Large data, Quick start, Observability and others had none."""
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    headings = re.findall(r"^## \S.*$", text, re.MULTILINE)
    assert headings, f"{_page_id(page)} has no ## section headings"


@pytest.mark.parametrize("page", [ROOT / "README.md", *PAGES], ids=_page_id)
def test_no_code_line_is_wider_than_the_block(page: Path) -> None:
    """Before: comments on the quick start, FastAPI and large-data pages ran past it."""
    text = page.read_text(encoding="utf-8")
    too_wide = []
    for block in _FENCE.finditer(text):
        first = text.count("\n", 0, block.start("code")) + 1
        for number, line in enumerate(block.group("code").splitlines(), first):
            if len(line) > MAX_CODE_LINE:
                too_wide.append(f"{_page_id(page)}:{number} ({len(line)} characters)")
    assert not too_wide, too_wide


def test_the_site_is_as_wide_as_the_check_assumes() -> None:
    css = (ROOT / "docs" / "assets" / "extra.css").read_text(encoding="utf-8")
    assert "max-width: 68rem" in css
    assert "assets/extra.css" in (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
