"""Every ```python block of the README runs as written (in a fresh namespace).

A block may be indented under a list item; it runs dedented, as Markdown shows it.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
FENCED = re.compile(r"^( *)```python\n(.*?)^\1```", flags=re.S | re.M)
BLOCKS = [textwrap.dedent(body) for _, body in FENCED.findall(README.read_text())]


def test_readme_has_snippets() -> None:
    assert len(BLOCKS) >= 10


def test_indented_blocks_are_found_and_dedented() -> None:
    text = "- item:\n\n  ```python\n  x = 1\n  if x:\n      y = 2\n  ```\n\n```python\nz = 3\n```\n"
    found = [textwrap.dedent(body) for _, body in FENCED.findall(text)]
    assert found == ["x = 1\nif x:\n    y = 2\n", "z = 3\n"]


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_snippet_runs(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    code = compile(BLOCKS[index], f"README.md[python block {index}]", "exec")
    exec(code, {"__name__": f"readme_{index}"})
