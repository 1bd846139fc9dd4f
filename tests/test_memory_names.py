"""The name extractor, as a table of user turns and the name it should find."""

from __future__ import annotations

import pytest

from convers.memory.names import find_name

CASES = [
    # text, asked_for_name, expected name, certain
    ("my name is Sam", False, "Sam", True),
    ("My name's Priya, nice to meet you", False, "Priya", True),
    ("call me sam", False, "Sam", True),
    ("You can call me Jo.", False, "Jo", True),
    ("My name is Sam Lee and I like tea", False, "Sam Lee", True),
    ("Hi, I'm Sam!", False, "Sam", False),
    ("i'm sam", True, "Sam", False),
    ("Sam.", True, "Sam", False),
    ("it's Priya", True, "Priya", False),
    ("i'm sam", False, None, None),
    ("I'm tired", False, None, None),
    ("I'm Tired of this", False, None, None),
    ("I am not sure", True, None, None),
    ("hello", True, None, None),
    ("Sam.", False, None, None),
    ("The weather is nice", False, None, None),
]


@pytest.mark.parametrize(("text", "asked", "name", "certain"), CASES)
def test_find_name(text: str, asked: bool, name: str | None, certain: bool | None) -> None:
    found = find_name(text, asked_for_name=asked)
    if name is None:
        assert found is None
    else:
        assert found is not None and (found.name, found.certain) == (name, certain)
