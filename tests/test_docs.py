"""The examples in docs/*.md and in the docstrings of sigreg run and print what they claim."""

import doctest
import importlib
import pathlib
import pkgutil

import pytest

import sigreg

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
MODULES = sorted(m.name for m in pkgutil.iter_modules(sigreg.__path__, "sigreg."))
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


PAGES = sorted(p.name for p in DOCS.glob("*.md") if ">>>" in p.read_text())


def test_api_page_has_examples():
    assert "api.md" in PAGES


@pytest.mark.parametrize("page", PAGES)
def test_markdown_examples(page):
    result = doctest.testfile(str(DOCS / page), module_relative=False, optionflags=FLAGS)
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=FLAGS)
    assert result.failed == 0


def test_every_public_symbol_is_documented():
    for name in sigreg.__all__:
        obj = getattr(sigreg, name)
        assert obj.__doc__ and obj.__doc__.strip(), name


def test_readme_usage_runs():
    """The README's Usage block runs as written (it needs torch)."""
    pytest.importorskip("torch")
    text = (DOCS.parent / "README.md").read_text()
    start = text.index("```python\n", text.index("## Usage")) + len("```python\n")
    exec(compile(text[start : text.index("```", start)], "README.md", "exec"), {})
