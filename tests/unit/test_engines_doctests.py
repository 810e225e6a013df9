"""The runnable examples in the docstrings of the rollout and engine modules."""

from __future__ import annotations

import doctest
import importlib

import pytest


MODULES = ["mmsearch_r1.rollout", "mmsearch_r1.engines.scripted", "mmsearch_r1.engines.hf", "mmsearch_r1.engines.openai"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
