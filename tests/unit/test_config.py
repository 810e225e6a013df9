"""The config tree: defaults, TOML files, dotted overrides, one-sentence errors, saved resolved config."""

import tomllib

import pytest

from mmsearch_r1.config import Config, describe, load_config, parse_override, save_config
from mmsearch_r1.errors import ConfigError


def test_defaults_follow_the_published_recipe():
    cfg = load_config()
    assert cfg.reward.format_weight == 0.1 and cfg.reward.search_penalty == 0.1
    assert (cfg.protocol.max_turns, cfg.protocol.max_image_searches, cfg.protocol.max_text_searches) == (3, 1, 2)


def test_toml_file_then_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('seed = 7\n[reward]\nsearch_penalty = 0.3\nmatch = "subem"\n')
    cfg = load_config(path, ["reward.search_penalty=0.2", "protocol.max_turns=4"])
    assert cfg.seed == 7
    assert cfg.reward.search_penalty == 0.2  # the override wins over the file
    assert cfg.reward.match == "subem"
    assert cfg.protocol.max_turns == 4


@pytest.mark.parametrize(
    "item, path, value",
    [("a.b=1", ["a", "b"], 1), ("a=true", ["a"], True), ("a=0.5", ["a"], 0.5), ('a="x y"', ["a"], "x y"),
     ("a=plain/path", ["a"], "plain/path"), ("a=[1, 2]", ["a"], [1, 2])],
)
def test_override_values_parse_as_toml(item, path, value):
    assert parse_override(item) == (path, value)


def test_unknown_key_names_the_key_and_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown config key `protocol.max_turn`; known keys in `protocol`: max_turns"):
        load_config(None, ["protocol.max_turn=2"])


def test_unknown_top_level_section():
    with pytest.raises(ConfigError, match="unknown config key `rewards`; known top-level keys: seed"):
        load_config(None, ["rewards.x=1"])


def test_out_of_range_value_names_the_bound():
    with pytest.raises(ConfigError, match=r"config key `reward.search_penalty` must be less than or equal to 1 \(got 1.5\)"):
        load_config(None, ["reward.search_penalty=1.5"])
    with pytest.raises(ConfigError, match=r"config key `protocol.max_turns` must be greater than or equal to 1"):
        load_config(None, ["protocol.max_turns=0"])


def test_bad_choice_lists_the_allowed_values():
    with pytest.raises(ConfigError, match=r"`reward.match` must be 'em' or 'subem'"):
        load_config(None, ["reward.match=fuzzy"])


def test_errors_are_one_sentence():
    with pytest.raises(ConfigError) as error:
        load_config(None, ["reward.search_penalty=-1"])
    assert "\n" not in str(error.value) and str(error.value).endswith(".")


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[reward\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_override_without_equals_is_rejected():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["reward.search_penalty"])


def test_resolved_config_is_saved_and_reloads_identically(tmp_path):
    cfg = load_config(None, ["seed=3", "reward.per_search_penalty=true"])
    path = save_config(cfg, tmp_path / "run")
    assert tomllib.loads(path.read_text())["seed"] == 3
    assert load_config(path) == cfg


def test_every_field_is_documented():
    rows = describe(Config)
    assert len(rows) > 10
    undocumented = [key for key, _, _, description in rows if not description]
    assert undocumented == []
