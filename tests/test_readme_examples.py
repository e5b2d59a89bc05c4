"""
The examples in README.rst's "Testing with txrevproxy" section run and pass, as a user would run them.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.rst"


def section(text: str, title: str) -> str:
    start = text.index(f"{title}\n{'=' * len(title)}\n")
    following = re.search(r"\n[^\n]+\n=+\n", text[start + len(title) * 2 + 2 :])
    return text[start : start + len(title) * 2 + 2 + (following.start() if following else len(text))]


def code_blocks(text: str) -> list[str]:
    blocks = re.findall(r"\.\. code-block:: python\n\n((?:    .*\n|\n)+)", text)
    return [textwrap.dedent(block) for block in blocks]


def test_testing_examples(pytester: pytest.Pytester) -> None:
    """Each example of the testing section is a test file that passes (2 pytest tests, 2 + 1 trial tests)."""
    blocks = code_blocks(section(README.read_text(), "Testing with txrevproxy"))
    assert len(blocks) == 3
    pytester.makepyfile(**{f"test_example_{index}": block for index, block in enumerate(blocks)})
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning")
    result.assert_outcomes(passed=5)
