"""The tools' CLI commands, run as a user runs them."""

import json
import subprocess
import sys

from PIL import Image
from typer.testing import CliRunner

from mmsearch_r1.cli import app

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_index_and_search_text(tmp_path):
    corpus = tmp_path / "pages.jsonl"
    rows = [
        {"url": "http://w/a", "title": "Alpha guild", "text": "The Alpha guild was founded in Quenta. Its colour is teal."},
        {"url": "http://w/b", "title": "Beta guild", "text": "The Beta guild trades tin. Its colour is amber."},
    ]
    corpus.write_text("\n".join(json.dumps(r) for r in rows))
    assert "indexed 2 pages" in run("index", "text", "--corpus", str(corpus), "--out", str(tmp_path / "idx"))
    hits = json.loads(run("search", "text", "--index", str(tmp_path / "idx"), "--k", "1", "--json", "colour of the Beta guild"))
    assert len(hits) == 1 and set(hits[0]) == {"title", "url", "summary", "score"}
    assert hits[0]["url"] == "http://w/b" and "amber" in hits[0]["summary"]
    assert "Beta guild" in run("search", "text", "--index", str(tmp_path / "idx"), "tin")


def test_index_and_search_image(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for colour in ("red", "green", "blue"):
        Image.new("RGB", (40, 40), colour).save(folder / f"{colour}_flag.png")
    assert "indexed 3 images" in run("index", "image", "--images", str(folder), "--out", str(tmp_path / "idx"))
    Image.new("RGB", (50, 50), (0, 0, 250)).save(tmp_path / "query.png")
    hits = json.loads(run("search", "image", "--index", str(tmp_path / "idx"), "--k", "2", "--json", str(tmp_path / "query.png")))
    assert [set(h) for h in hits] == [{"title", "url", "score"}] * 2 and hits[0]["title"] == "blue flag"


def test_user_errors_print_one_line_without_traceback(tmp_path):
    missing = tmp_path / "nope.jsonl"
    done = subprocess.run(
        [sys.executable, "-c", "from mmsearch_r1.cli import main; main()", "index", "text", "--corpus", str(missing), "--out", str(tmp_path / "x")],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: corpus file {missing} does not exist; pass a JSONL or Parquet file of pages."


def test_cache_stats(tmp_path):
    from mmsearch_r1.tools.base import TextHit, TextSearch
    from mmsearch_r1.tools.cache import CachedTextSearch, SearchCache

    class One(TextSearch):
        def search(self, query, k=5):
            return [TextHit("t", "u", "s")]

    cached = CachedTextSearch(One(), SearchCache(tmp_path / "cache"))
    cached.search("a")
    cached.search("a")
    stats = json.loads(run("cache", "stats", "--dir", str(tmp_path / "cache")))
    assert (stats["entries"], stats["hits"], stats["misses"]) == (1, 1, 1)


def test_serve_starts_the_service_from_the_config(tmp_path):
    import os
    import socket
    import time

    import httpx

    from mmsearch_r1.tools.local_text import build_text_index

    build_text_index([{"url": "http://w/a", "title": "Alpha", "text": "Alpha is teal."}], tmp_path / "idx")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "MMSEARCH_SERVICE_TOKEN": "cli-token"}
    command = [sys.executable, "-c", "from mmsearch_r1.cli import main; main()", "serve", "--port", str(port),
               "--set", f'tools.text.index_dir="{tmp_path / "idx"}"', "--set", f'tools.cache.dir="{tmp_path / "cache"}"']
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"{url}/health", timeout=1).json()
                break
            except httpx.HTTPError:
                assert server.poll() is None and time.monotonic() < deadline, server.stdout.read() if server.poll() is not None else "timeout"
                time.sleep(0.2)
        assert health == {"status": "ok", "image_search": False, "text_search": True}
        hits = httpx.post(f"{url}/v1/search/text", json={"query": "alpha", "k": 1}, headers={"Authorization": "Bearer cli-token"}).json()["hits"]
        assert hits[0]["url"] == "http://w/a"
    finally:
        server.terminate()
        server.wait(timeout=30)
