"""Web backends against a loopback fake server reproducing SerpAPI, SearXNG, web pages, an LLM and their failures.

No test here touches any address other than 127.0.0.1 (private addresses in redirects are refused before
any connection is made, which is what the tests check).
"""

import io
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image

from mmsearch_r1.config import load_config
from mmsearch_r1.errors import ConfigError, ToolBadResponse, ToolError, ToolRateLimited, ToolRefusedTarget, ToolTimeout
from mmsearch_r1.tools.web import SearxngSearch, SerpApiGoogle, SerpApiLens
from mmsearch_r1.tools.webclient import RateLimiter, WebClient, check_target

from loopback import LoopbackServer

KEY = "sk-test-7f3a9c-SECRET"
PAGE = """<html><head><title>Zorblax</title></head><body>
<nav><ul><li>Home</li><li>Login</li><li>Subscribe to our newsletter today</li></ul></nav>
<article><h1>Zorblax</h1><p>Zorblax is a small country in the north of the map, known for its mountains and rivers.</p>
<p>The capital of Zorblax is Quenta, a city on the river Ume, founded long ago by traders.</p>
<p>Its people mine tin and grow barley in the valleys, and they trade both with their neighbours.</p></article>
<footer>Copyright notice and cookie settings</footer></body></html>"""


def png(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 10), colour).save(buffer, format="PNG")
    return buffer.getvalue()


class FakeWeb(BaseHTTPRequestHandler):
    """Routes: /<behaviour>/search.json (SerpAPI), /<behaviour>/search (SearXNG), /page/*, /thumb/*, /llm*/chat/completions."""

    counts: dict = {}
    seen_keys: list = []
    seen_hosts: list = []

    def log_message(self, *args):  # keep test output quiet
        pass

    def send(self, status, body=b"", kind="application/json", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path.startswith("/llm-broken"):
            return self.send(500, b"{}")
        question = body["messages"][0]["content"].split("Question: ")[1].split("\n")[0]
        self.send(200, json.dumps({"choices": [{"message": {"content": f"LLM summary for: {question}"}}]}).encode())

    def do_GET(self):
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        behaviour = parts.path.strip("/").split("/")[0]
        FakeWeb.counts[behaviour] = FakeWeb.counts.get(behaviour, 0) + 1
        FakeWeb.seen_hosts.append(self.headers.get("Host"))
        if "api_key" in query:
            FakeWeb.seen_keys.append(query["api_key"])
        host = f"http://127.0.0.1:{self.server.server_port}"
        if behaviour == "page":
            return self.send(200, PAGE.encode(), "text/html; charset=utf-8")
        if behaviour == "thumb":
            return self.send(200, png(parts.path.split("/")[-1].split(".")[0]), "image/png")
        if behaviour == "redirect-private":
            return self.send(302, headers=[("Location", "http://10.1.2.3/secret")])
        if behaviour == "redirect-ok":
            return self.send(302, headers=[("Location", "/page/after-redirect")])
        if behaviour == "slow":
            time.sleep(1.0)
            return self.send(200, b"{}")
        if behaviour == "limited":
            return self.send(429, b'{"error": "rate"}', headers=[("Retry-After", "0")])
        if behaviour == "broken":
            return self.send(500, b"oops")
        if behaviour == "flaky" and FakeWeb.counts[behaviour] % 2 == 1:
            return self.send(503, b"busy")
        if behaviour == "malformed":
            return self.send(200, b'{"organic_results": [')
        if behaviour == "huge":
            return self.send(200, b"[" + b"0," * 600_000 + b"0]")
        if behaviour == "apierror":
            return self.send(200, json.dumps({"error": f"Invalid API key {query.get('api_key')}"}).encode())
        if behaviour == "empty":
            return self.send(200, json.dumps({"error": "Google hasn't returned any results for this query."}).encode())
        if query.get("engine") == "google":
            rows = [{"title": f"Page {i}", "link": f"{host}/page/{i}", "snippet": f"snippet {i}"} for i in range(int(query["num"]))]
            rows.append({"title": "private", "link": f"{host}/redirect-private", "snippet": "snippet private"})
            return self.send(200, json.dumps({"organic_results": rows}).encode())
        if query.get("engine") == "google_lens":
            rows = [{"title": f"Match {c}", "link": f"https://example.org/{c}", "thumbnail": f"{host}/thumb/{c}.png"} for c in ("red", "green", "blue")]
            rows.insert(1, {"title": "bad thumb", "link": "https://example.org/bad", "thumbnail": "http://10.0.0.7/t.png"})
            rows.insert(2, {"title": "not an image", "link": "https://example.org/html", "thumbnail": f"{host}/page/not-an-image"})
            rows.append({"title": "inline", "link": "https://example.org/inline", "thumbnail": "data:image/png;base64," + __import__("base64").b64encode(png("white")).decode()})
            return self.send(200, json.dumps({"visual_matches": rows, "image_url": query["url"]}).encode())
        if parts.path.endswith("/search") and query.get("format") == "json":
            rows = [{"title": f"Searx {i}", "url": f"{host}/page/s{i}", "content": f"searx snippet {i}"} for i in range(6)]
            return self.send(200, json.dumps({"results": rows}).encode())
        self.send(404, b"{}")


@pytest.fixture(scope="module")
def server():
    httpd = LoopbackServer(("127.0.0.1", 0), FakeWeb)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv("SERPAPI_API_KEY", KEY)


def tools_cfg(server, behaviour="ok", **web):
    settings = {"timeout_s": 0.4, "max_retries": 2, "backoff_s": 0.01, "rate_limit_per_s": 500.0, "allow_loopback": True, **web}
    overrides = [f"tools.web.{k}={json.dumps(v)}" for k, v in settings.items()]
    overrides += [f'tools.serpapi.base_url="{server}/{behaviour}"', f'tools.searxng.base_url="{server}/{behaviour}"']
    return load_config(None, overrides).tools


def test_google_results_are_fetched_extracted_and_summarized(server):
    hits = SerpApiGoogle(tools_cfg(server)).search("What is the capital of Zorblax?", k=2)
    assert [h.title for h in hits] == ["Page 0", "Page 1"]
    assert "The capital of Zorblax is Quenta" in hits[0].summary
    assert "newsletter" not in hits[0].summary and "cookie" not in hits[0].summary
    assert KEY in FakeWeb.seen_keys  # the key really was sent


def test_loopback_pages_are_refused_by_default_and_snippets_used(server):
    cfg = tools_cfg(server, allow_loopback=False)
    hits = SerpApiGoogle(cfg).search("capital of Zorblax", k=2)
    assert [h.summary for h in hits] == ["snippet 0", "snippet 1"]


def test_redirects_are_followed_and_checked_at_every_hop(server):
    client = WebClient("test", tools_cfg(server).web)
    assert b"capital of Zorblax" in client.fetch(f"{server}/redirect-ok").body
    with pytest.raises(ToolRefusedTarget, match="10.1.2.3"):
        client.fetch(f"{server}/redirect-private")


def test_fetch_connects_to_the_checked_address(server):
    # "pinned.test" exists only in this resolver: the fetch can only succeed by connecting to the address
    # the check approved, not by resolving the name a second time.
    port = server.rsplit(":", 1)[1]
    client = WebClient("test", tools_cfg(server).web, resolver={"pinned.test": ["127.0.0.1"]}.__getitem__)
    response = client.fetch(f"http://pinned.test:{port}/page/pinned")
    assert b"capital of Zorblax" in response.body and response.url == f"http://pinned.test:{port}/page/pinned"
    assert FakeWeb.seen_hosts[-1] == f"pinned.test:{port}"


def test_schemes_and_private_dns_answers_are_refused():
    answers = {"evil.test": ["93.184.216.34", "192.168.1.5"], "public.test": ["93.184.216.34"], "meta.test": ["169.254.169.254"]}
    resolve = answers.__getitem__
    for url in ("file:///etc/passwd", "ftp://example.org/x", "gopher://x", "javascript:alert(1)"):
        with pytest.raises(ToolRefusedTarget, match="only http and https"):
            check_target(url, False, resolve)
    for url in ("http://evil.test/", "http://meta.test/latest", "http://10.0.0.1/", "http://[::1]/", "http://127.0.0.1/", "http://[::ffff:10.0.0.1]/"):
        with pytest.raises(ToolRefusedTarget):
            check_target(url, False, resolve)
    check_target("https://public.test/page", False, resolve)
    check_target("http://127.0.0.1:8000/", True, resolve)
    with pytest.raises(ToolRefusedTarget):
        check_target("http://10.0.0.1/", True, resolve)  # allow_loopback opens loopback only


FAILURES = [
    ("slow", ToolTimeout, "did not answer"),
    ("limited", ToolRateLimited, "429"),
    ("broken", ToolBadResponse, "HTTP 500"),
    ("malformed", ToolBadResponse, "malformed JSON"),
    ("huge", ToolBadResponse, "cap"),
    ("apierror", ToolBadResponse, "answered with an error"),  # SerpAPI's error shape; SearXNG has none
]
CASES = [(backend, *failure) for backend in ("google", "lens", "searxng") for failure in FAILURES if not (backend == "searxng" and failure[0] == "apierror")]


@pytest.mark.parametrize("backend, behaviour, error, message", CASES)
def test_failures_become_typed_errors_without_the_key(server, backend, behaviour, error, message, caplog):
    caplog.set_level(logging.DEBUG)
    FakeWeb.counts.pop(behaviour, None)
    cfg = tools_cfg(server, behaviour, max_response_bytes=1_000_000)
    image = Image.new("RGB", (8, 8), "red")
    image.info["url"] = "https://images.example.org/q.png"
    call = {
        "google": lambda: SerpApiGoogle(cfg).search("q", k=3),
        "lens": lambda: SerpApiLens(cfg).search(image, k=3),
        "searxng": lambda: SearxngSearch(cfg).search("q", k=3),
    }[backend]
    with pytest.raises(error, match=message) as raised:
        call()
    assert KEY not in str(raised.value)
    assert KEY not in caplog.text
    retried = behaviour in ("slow", "limited", "broken")
    assert FakeWeb.counts[behaviour] == (cfg.web.max_retries + 1 if retried else 1)


def test_a_client_that_gives_up_leaves_the_server_quiet(server, capfd):
    """The reply to a timed-out request goes to a closed socket: the fake server must not print a traceback."""
    with pytest.raises(ToolTimeout):
        SerpApiGoogle(tools_cfg(server, "slow", max_retries=0)).search("q", k=3)
    time.sleep(1.5)  # the handler sleeps 1 s, then writes its reply
    assert "Exception occurred" not in capfd.readouterr().err


def test_a_transient_5xx_is_retried(server):
    FakeWeb.counts.pop("flaky", None)
    hits = SerpApiGoogle(tools_cfg(server, "flaky")).search("capital", k=1)
    assert len(hits) == 1 and FakeWeb.counts["flaky"] == 2


def test_no_results_is_an_empty_list(server):
    assert SerpApiGoogle(tools_cfg(server, "empty")).search("zzzz", k=3) == []


def test_missing_key_is_a_config_error(server, monkeypatch):
    monkeypatch.delenv("SERPAPI_API_KEY")
    with pytest.raises(ConfigError, match="SERPAPI_API_KEY"):
        SerpApiGoogle(tools_cfg(server))


def test_searxng_results(server):
    hits = SearxngSearch(tools_cfg(server)).search("capital of Zorblax", k=3)
    assert [h.title for h in hits] == ["Searx 0", "Searx 1", "Searx 2"]
    assert all("Quenta" in h.summary for h in hits)


def test_llm_summaries_and_their_fallback(server):
    cfg = tools_cfg(server)
    cfg.summary.type = "llm"
    cfg.summary.llm_base_url = f"{server}/llm/v1"
    hits = SearxngSearch(cfg).search("capital of Zorblax", k=1)
    assert hits[0].summary == "LLM summary for: capital of Zorblax"
    cfg.summary.llm_base_url = f"{server}/llm-broken/v1"
    hits = SearxngSearch(cfg).search("capital of Zorblax", k=1)
    assert "The capital of Zorblax is Quenta" in hits[0].summary  # extractive fallback


def test_lens_returns_fetched_thumbnails_and_skips_refused_ones(server):
    image = Image.new("RGB", (20, 20), "red")
    image.info["url"] = "https://images.example.org/q.png"
    hits = SerpApiLens(tools_cfg(server)).search(image, k=5)
    assert [h.title for h in hits] == ["Match red", "Match green", "Match blue", "inline"]
    assert hits[0].thumbnail.getpixel((1, 1)) == (255, 0, 0) and hits[3].thumbnail.getpixel((0, 0)) == (255, 255, 255)
    assert hits[1].url == "https://example.org/green"


def test_lens_needs_a_public_image_url(server, tmp_path):
    cfg = tools_cfg(server)
    with pytest.raises(ToolError, match="public URL"):
        SerpApiLens(cfg).search(Image.new("RGB", (8, 8), "blue"), k=2)
    cfg.image.public_image_dir = tmp_path
    cfg.image.public_image_base_url = "https://img.example.org/q"
    lens = SerpApiLens(cfg)
    url = lens.public_url(Image.new("RGB", (8, 8), "blue"))
    assert url.startswith("https://img.example.org/q/") and (tmp_path / url.rsplit("/", 1)[1]).is_file()
    assert len(lens.search(Image.new("RGB", (8, 8), "blue"), k=2)) == 2


def test_rate_limiter_spaces_calls():
    limiter = RateLimiter(50.0)
    start = time.monotonic()
    for _ in range(6):
        limiter.wait()
    assert time.monotonic() - start >= 5 / 50 - 0.005
