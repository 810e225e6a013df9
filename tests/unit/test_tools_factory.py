"""build_toolbox: the configured backends, each behind the cache, and clear errors for missing settings."""

import pytest
from PIL import Image

from mmsearch_r1.config import load_config
from mmsearch_r1.errors import CacheMiss, ConfigError
from mmsearch_r1.tools import build_toolbox, default_cache_dir
from mmsearch_r1.tools.cache import CachedImageSearch, CachedTextSearch
from mmsearch_r1.tools.local_image import LocalImageSearch, build_image_index
from mmsearch_r1.tools.local_text import LocalTextSearch, build_text_index
from mmsearch_r1.tools.remote import RemoteTextSearch


@pytest.fixture
def indexes(tmp_path):
    build_text_index([{"url": "http://a", "title": "A", "text": "Alpha is teal."}], tmp_path / "text")
    build_image_index([(Image.new("RGB", (8, 8), "red"), "Red", "http://r")], tmp_path / "image")
    return tmp_path


def tools(*overrides):
    return load_config(None, list(overrides)).tools


def test_local_tools_behind_one_cache(indexes):
    cfg = tools(f'tools.text.index_dir="{indexes / "text"}"', f'tools.image.index_dir="{indexes / "image"}"', "tools.summary.max_chars=50")
    box = build_toolbox(cfg, cache_dir=indexes / "cache")
    assert isinstance(box.text, CachedTextSearch) and isinstance(box.text.backend, LocalTextSearch)
    assert isinstance(box.image, CachedImageSearch) and isinstance(box.image.backend, LocalImageSearch)
    assert box.text.cache.directory == indexes / "cache" and box.text.backend.summary_chars == 50
    assert box.text.search("alpha", 1)[0].url == "http://a"
    assert box.image.search(Image.new("RGB", (8, 8), "red"), 1)[0].title == "Red"
    assert box.text.cache.stats().entries == 2


def test_off_mode_replay_mode_and_config_dir(indexes):
    base = f'tools.text.index_dir="{indexes / "text"}"'
    bare = build_toolbox(tools(base, 'tools.cache.mode="off"'), image=False)
    assert isinstance(bare.text, LocalTextSearch) and bare.image is None
    replay = build_toolbox(tools(base, 'tools.cache.mode="replay"', f'tools.cache.dir="{indexes / "c2"}"'), image=False, cache_dir=indexes / "ignored")
    assert replay.text.cache.directory == indexes / "c2"
    with pytest.raises(CacheMiss):
        replay.text.search("alpha", 1)


def test_missing_index_and_remote_are_handled(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="tools.text.index_dir is not set"):
        build_toolbox(tools(), cache_dir=tmp_path, image=False)
    with pytest.raises(ConfigError, match="tools.image.index_dir is not set"):
        build_toolbox(tools(), cache_dir=tmp_path, text=False)
    monkeypatch.setenv("MMSEARCH_SERVICE_TOKEN", "t")
    box = build_toolbox(tools('tools.text.type="remote"'), cache_dir=tmp_path, image=False)
    assert isinstance(box.text, RemoteTextSearch)  # the service keeps the cache
    monkeypatch.delenv("MMSEARCH_SERVICE_TOKEN")
    with pytest.raises(ConfigError, match="MMSEARCH_SERVICE_TOKEN"):
        build_toolbox(tools('tools.text.type="remote"'), cache_dir=tmp_path, image=False)


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "mmsearch-r1" / "search"
