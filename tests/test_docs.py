"""The examples in README.md and docs/ run as doctests, so they cannot rot."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_examples_run(page: Path) -> None:
    result = doctest.testfile(str(page), module_relative=False, optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {page.name}"


def test_the_extending_page_shows_the_example_backend_as_it_is() -> None:
    """docs/extending.md walks through examples/directory_store.py, which tests/test_conformance.py proves."""
    page = (ROOT / "docs" / "extending.md").read_text()
    example = (ROOT / "examples" / "directory_store.py").read_text()
    assert f"```python\n{example}```" in page
