"""The runnable examples in the tools' docstrings stay true."""

import doctest
import importlib

import pytest

MODULES = ["summary", "local_text", "local_image", "embedders", "cache", "webclient"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"mmsearch_r1.tools.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
