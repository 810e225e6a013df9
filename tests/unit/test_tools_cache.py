"""The search cache: keys, modes, counters, image hits round trip."""

import pytest
from PIL import Image

from mmsearch_r1.errors import CacheMiss, ConfigError, ToolTimeout
from mmsearch_r1.tools.base import ImageHit, ImageSearch, TextHit, TextSearch
from mmsearch_r1.tools.cache import CachedImageSearch, CachedTextSearch, SearchCache, cache_key, image_digest, normalize_query


class CountingText(TextSearch):
    name = "counting_text"
    cost_per_call = 0.01

    def __init__(self, fail: bool = False):
        self.calls, self.fail = 0, fail

    def search(self, query, k=5):
        self.calls += 1
        if self.fail:
            raise ToolTimeout("the backend did not answer in 1 s")
        return [TextHit(f"title {i}", f"http://u/{i}", f"{query} #{self.calls}", score=1.0 / (i + 1)) for i in range(k)]


class ColourImage(ImageSearch):
    name = "colour_image"

    def __init__(self):
        self.calls = 0

    def search(self, image, k=5):
        self.calls += 1
        colour = image.convert("RGB").getpixel((0, 0))
        return [ImageHit(Image.new("RGB", (8, 6), colour), f"colour {colour}", "http://c", 0.5)]


def test_query_normalization_and_keys():
    assert normalize_query("Capital  of ZORBLAX\n") == normalize_query("capital of zorblax")
    assert cache_key("a", query="q", k=5) == cache_key("a", k=5, query="q")
    assert cache_key("a", query="q", k=5) != cache_key("b", query="q", k=5) != cache_key("a", query="q", k=3)


def test_image_digest_is_about_pixels_not_objects():
    red = Image.new("RGB", (4, 4), "red")
    assert image_digest(red) == image_digest(Image.new("RGB", (4, 4), (255, 0, 0)))
    assert image_digest(red) == image_digest(red.convert("RGBA"))
    assert image_digest(red) != image_digest(Image.new("RGB", (4, 5), "red"))


def test_use_mode_calls_once_then_hits(tmp_path):
    backend = CountingText()
    cached = CachedTextSearch(backend, SearchCache(tmp_path))
    first = cached.search("Zorblax capital", k=2)
    again = cached.search("zorblax   CAPITAL", k=2)
    assert first == again and backend.calls == 1
    cached.search("zorblax capital", k=3)
    stats = cached.cache.stats()
    assert (stats.hits, stats.misses, stats.live_calls, stats.failures, stats.entries) == (1, 2, 2, 0, 2)
    assert stats.cost_usd == pytest.approx(0.02)


def test_record_always_calls_and_replay_never_does(tmp_path):
    backend = CountingText()
    CachedTextSearch(backend, SearchCache(tmp_path, mode="record")).search("q", k=1)
    refreshed = CachedTextSearch(backend, SearchCache(tmp_path, mode="record")).search("q", k=1)
    assert backend.calls == 2 and refreshed[0].summary == "q #2"
    replay = CachedTextSearch(backend, SearchCache(tmp_path, mode="replay"))
    assert replay.search("Q", k=1)[0].summary == "q #2" and backend.calls == 2
    with pytest.raises(CacheMiss, match="replay mode"):
        replay.search("never asked", k=1)
    assert backend.calls == 2


def test_failures_are_counted_raised_and_not_stored(tmp_path):
    cache = SearchCache(tmp_path)
    with pytest.raises(ToolTimeout):
        CachedTextSearch(CountingText(fail=True), cache).search("q")
    working = CountingText()
    CachedTextSearch(working, cache).search("q")
    assert working.calls == 1
    stats = cache.stats()
    assert (stats.failures, stats.live_calls, stats.entries) == (1, 2, 1)
    assert stats.cost_usd == pytest.approx(0.01)  # only the answered call is billed


def test_image_hits_round_trip_with_thumbnails(tmp_path):
    backend = ColourImage()
    cached = CachedImageSearch(backend, SearchCache(tmp_path))
    query = Image.new("RGB", (10, 10), (10, 200, 30))
    live = cached.search(query, k=1)
    stored = CachedImageSearch(backend, SearchCache(tmp_path, mode="replay")).search(query.copy(), k=1)
    assert backend.calls == 1
    assert stored[0].title == live[0].title and stored[0].thumbnail.size == (8, 6)
    assert stored[0].thumbnail.getpixel((3, 3)) == (10, 200, 30)
    assert cached.search(Image.new("RGB", (10, 10), "blue"), k=1)[0].title == "colour (0, 0, 255)"


def test_unknown_mode_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cache mode"):
        SearchCache(tmp_path, mode="sometimes")
