"""The search service on loopback: same answers as local tools, auth and limits, typed errors, a load test."""

import asyncio
import base64
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from PIL import Image

from mmsearch_r1.config import load_config
from mmsearch_r1.errors import CacheMiss, ConfigError, ToolError, ToolTimeout
from mmsearch_r1.tools import build_toolbox
from mmsearch_r1.tools.base import TextSearch, Toolbox
from mmsearch_r1.tools.cache import CachedTextSearch, SearchCache
from mmsearch_r1.tools.local_image import build_image_index
from mmsearch_r1.tools.local_text import build_text_index
from mmsearch_r1.tools.remote import RemoteImageSearch, RemoteTextSearch
from mmsearch_r1.tools.service import create_app, start_background

TOKEN = "service-token-for-tests"
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black"]
PAGES = [{"url": f"http://w/{c}", "title": f"The {c} guild", "text": f"The {c} guild meets on Mondays. Its emblem is {c}. It was founded in year {i}."} for i, c in enumerate(COLOURS)]


@pytest.fixture(scope="module")
def indexes(tmp_path_factory):
    root = tmp_path_factory.mktemp("indexes")
    build_text_index(PAGES, root / "text")
    build_image_index([(Image.new("RGB", (24, 24), c), f"The {c} guild", f"http://w/{c}") for c in COLOURS], root / "image")
    return root


def local_cfg(indexes, cache_dir):
    overrides = [f'tools.text.index_dir="{indexes / "text"}"', f'tools.image.index_dir="{indexes / "image"}"', f'tools.cache.dir="{cache_dir}"']
    return load_config(None, overrides).tools


@pytest.fixture(scope="module")
def service(indexes, tmp_path_factory):
    cfg = local_cfg(indexes, tmp_path_factory.mktemp("cache"))
    toolbox = build_toolbox(cfg)
    running = start_background(create_app(toolbox, token=TOKEN, max_body_bytes=200_000, max_k=10, cache=toolbox.text.cache))
    yield running, toolbox
    running.stop()


def remote(url, token=TOKEN):
    cfg = load_config(None, [f'tools.remote.url="{url}"']).tools.remote
    return RemoteImageSearch(cfg, token=token), RemoteTextSearch(cfg, token=token)


def test_remote_tools_answer_like_local_ones(service, indexes):
    running, toolbox = service
    image, text = remote(running.url)
    query = Image.new("RGB", (30, 30), "blue")
    remote_hits, local_hits = image.search(query, k=3), toolbox.image.search(query, k=3)
    assert [(h.title, h.url) for h in remote_hits] == [(h.title, h.url) for h in local_hits]
    assert remote_hits[0].title == "The blue guild" and remote_hits[0].thumbnail.getpixel((2, 2)) == (0, 0, 255)
    assert text.search("emblem purple", k=2) == toolbox.text.search("emblem purple", k=2)
    assert httpx.get(f"{running.url}/health").json() == {"status": "ok", "image_search": True, "text_search": True}


def test_async_calls_run_concurrently(service):
    image, text = remote(service[0].url)

    async def both():
        return await asyncio.gather(text.asearch("red guild", 1), image.asearch(Image.new("RGB", (8, 8), "red"), 1))

    text_hits, image_hits = asyncio.run(both())
    assert text_hits[0].url == "http://w/red" == image_hits[0].url


def test_token_body_size_and_k_limits(service):
    url = service[0].url
    _, wrong = remote(url, token="nope")
    with pytest.raises(ToolError, match="refused the token"):
        wrong.search("red", 1)
    _, text = remote(url)
    with pytest.raises(ToolError, match="over this service's limit of 10"):
        text.search("red", k=11)
    big = base64.b64encode(b"\0" * 300_000).decode()
    response = httpx.post(f"{url}/v1/search/image", json={"image": big, "k": 1}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 413
    response = httpx.post(f"{url}/v1/search/image", json={"image": "bm90IGFuIGltYWdl", "k": 1}, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 400 and "not a readable image" in response.json()["message"]
    with pytest.raises(ConfigError, match="bearer token"):
        create_app(Toolbox(), token="")


class Stuck(TextSearch):
    name = "stuck"

    def search(self, query, k=5):
        raise ToolTimeout("the backend did not answer within 1 s.")


def test_tool_errors_cross_the_wire_with_their_type(tmp_path):
    running = start_background(create_app(Toolbox(text=Stuck()), token=TOKEN))
    replaying = start_background(create_app(Toolbox(text=CachedTextSearch(Stuck(), SearchCache(tmp_path, mode="replay"))), token=TOKEN))
    try:
        with pytest.raises(ToolTimeout, match="did not answer"):
            remote(running.url)[1].search("q", 2)
        with pytest.raises(CacheMiss, match="replay mode"):
            remote(replaying.url)[1].search("q", 2)
    finally:
        running.stop()
        replaying.stop()
    with pytest.raises(ToolError, match="unreachable"):
        remote(running.url)[1].search("q", 2)


def test_load_eight_clients_two_hundred_requests_each(service):
    running, toolbox = service
    before = toolbox.text.cache.stats()
    clients, calls = 8, 200

    def client(seed):
        image, text = remote(running.url)
        failures = 0
        for i in range(calls):
            colour = COLOURS[(seed + i) % len(COLOURS)]
            try:
                if i % 4 == 0:
                    ok = image.search(Image.new("RGB", (16, 16), colour), k=2)[0].title == f"The {colour} guild"
                else:
                    ok = text.search(f"{colour} emblem", k=3)[0].url == f"http://w/{colour}"
            except ToolError:
                ok = False
            failures += not ok
        return failures

    with ThreadPoolExecutor(clients) as pool:
        failures = list(pool.map(client, range(clients)))
    assert failures == [0] * clients
    after = toolbox.text.cache.stats()
    served = (after.hits + after.misses) - (before.hits + before.misses)
    assert served == clients * calls and after.failures == before.failures
    assert after.entries <= before.entries + 2 * len(COLOURS)  # one entry per distinct query, never duplicates
    assert httpx.get(f"{running.url}/v1/cache/stats", headers={"Authorization": f"Bearer {TOKEN}"}).json()["entries"] == after.entries
