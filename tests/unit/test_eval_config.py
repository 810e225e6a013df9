"""The eval config section: workflows, bounds and the judge, through the config tree."""

import pytest

from mmsearch_r1.config import load_config
from mmsearch_r1.errors import ConfigError


def test_defaults_and_overrides():
    cfg = load_config(None, ['eval.workflows=["direct", "on_demand"]', "eval.match=judge", "eval.judge.model=my-judge"])
    assert cfg.eval.workflows == ["direct", "on_demand"] and cfg.eval.match == "judge" and cfg.eval.judge.model == "my-judge"
    assert load_config(None, []).eval.workflows == ["direct", "rag", "on_demand"]


@pytest.mark.parametrize("override, key", [
    ('eval.workflows=["always"]', "eval.workflows"),
    ("eval.match=fuzzy", "eval.match"),
    ("eval.ci_level=1.5", "eval.ci_level"),
    ("eval.batch_size=0", "eval.batch_size"),
    ("eval.judge.concurrency=0", "eval.judge.concurrency"),
])
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])
