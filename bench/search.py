"""Search-tool benchmark: index build times and query latencies at 100k pages / 100k thumbnails.

Builds a synthetic corpus (pages of Zipf-distributed made-up words, a few sentences each) and a synthetic
image collection (procedurally drawn thumbnails), then measures, side by side in one run:

- text index build time, image index build time (embedding included);
- text query latency (BM25 top-5 + extractive summaries), p50 / p99;
- image query latency (embedding + exact faiss search + thumbnail decoding), p50 / p99;
- cache-hit latency for both tools, and the speed-up over a live query;
- the same text query through the search service on loopback (HTTP + JSON overhead).

Targets on a 2-core machine: p50 text < 10 ms, p50 image < 10 ms, cache hit < 1 ms.

    python bench/search.py                 # 100k pages, 100k thumbnails (a few minutes)
    python bench/search.py --pages 10000 --images 10000
"""

from __future__ import annotations

import argparse
import itertools
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def timed(calls) -> list[float]:
    """Milliseconds of each call."""
    out = []
    for call in calls:
        start = time.perf_counter()
        call()
        out.append((time.perf_counter() - start) * 1000)
    return out


def make_words(n: int, rng: random.Random) -> list[str]:
    syllables = ["ka", "lo", "mi", "ren", "tu", "sa", "vor", "el", "qui", "dan", "ro", "zu", "fen", "ta", "gri", "ol"]
    return list(dict.fromkeys("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))) for _ in range(n * 2)))[:n]


def make_pages(n: int, seed: int = 0):
    rng = random.Random(seed)
    vocab = make_words(30_000, rng)
    cumulative = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(len(vocab))))  # Zipf
    for i in range(n):
        sentences = []
        for _ in range(rng.randint(4, 7)):
            words = rng.choices(vocab, cum_weights=cumulative, k=rng.randint(8, 14))
            sentences.append(" ".join(words).capitalize() + ".")
        yield {"url": f"https://bench.example/{i}", "title": " ".join(rng.choices(vocab, k=3)).title(), "text": " ".join(sentences)}


def draw_thumbnail(i: int, side: int = 48, jitter_seed: int | None = None):
    from PIL import Image, ImageDraw

    look = random.Random(i)
    r = random.Random(jitter_seed if jitter_seed is not None else -i - 1)
    bg = tuple(look.randrange(150, 256) for _ in range(3))
    image = Image.new("RGB", (side, side), bg)
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        colour = tuple(look.randrange(0, 256) for _ in range(3))
        x, y, s = look.uniform(0.2, 0.8) * side, look.uniform(0.2, 0.8) * side, look.uniform(0.1, 0.3) * side
        x, y = x + r.uniform(-2, 2), y + r.uniform(-2, 2)
        (draw.ellipse if look.random() < 0.5 else draw.rectangle)([x - s, y - s, x + s, y + s], fill=colour)
    return image


def report(name: str, values: list[float], target: float | None = None) -> None:
    p50, p99 = statistics.median(values), percentile(values, 99)
    verdict = "" if target is None else ("  (target < %g ms: %s)" % (target, "met" if p50 < target else "NOT met"))
    print(f"{name:<34} p50 {p50:8.3f} ms   p99 {p99:8.3f} ms{verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=100_000)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--dir", type=Path, default=None, help="Work folder (default: a temporary one).")
    parser.add_argument("--reuse", action="store_true", help="Reuse the indexes already in --dir (measure queries only).")
    args = parser.parse_args()

    from PIL import Image

    from mmsearch_r1.tools.base import Toolbox
    from mmsearch_r1.tools.cache import CachedImageSearch, CachedTextSearch, SearchCache
    from mmsearch_r1.tools.local_image import LocalImageSearch, build_image_index
    from mmsearch_r1.tools.local_text import LocalTextSearch, build_text_index
    from mmsearch_r1.tools.remote import RemoteTextSearch
    from mmsearch_r1.config import load_config
    from mmsearch_r1.tools.service import create_app, start_background

    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-search-"))
    rng = random.Random(1)
    print(f"work folder: {work}")

    # --- text ---
    pages = list(make_pages(args.pages))
    reuse = args.reuse and (work / "text" / "index.json").is_file() and (work / "image" / "index.json").is_file()
    start = time.perf_counter()
    if not reuse:
        build_text_index(pages, work / "text")
    text_build = time.perf_counter() - start
    text = LocalTextSearch(work / "text")
    queries = [" ".join(rng.sample(rng.choice(pages)["text"].rstrip(".").split(), 3)) for _ in range(args.queries)]
    for q in queries[:20]:
        text.search(q, 5)  # warm-up
    text_ms = timed(lambda q=q: text.search(q, 5) for q in queries)

    # --- image ---
    start = time.perf_counter()
    if not reuse:
        build_image_index(((draw_thumbnail(i), f"item {i}", f"https://bench.example/img/{i}") for i in range(args.images)), work / "image")
    image_build = time.perf_counter() - start
    image = LocalImageSearch(work / "image")
    targets = [rng.randrange(args.images) for _ in range(args.queries)]
    probes = [draw_thumbnail(i, jitter_seed=10_000 + j).resize((96, 96), Image.Resampling.BILINEAR) for j, i in enumerate(targets)]
    for p in probes[:20]:
        image.search(p, 5)
    image_ms = timed(lambda p=p: image.search(p, 5) for p in probes)
    found = sum(image.search(p, 1)[0].url.endswith(f"/{i}") for p, i in zip(probes[:100], targets[:100]))

    # --- cache hits ---
    shutil.rmtree(work / "cache", ignore_errors=True)
    cache = SearchCache(work / "cache")
    cached_text, cached_image = CachedTextSearch(text, cache), CachedImageSearch(image, cache)
    for q in queries:
        cached_text.search(q, 5)
    for p in probes:
        cached_image.search(p, 5)
    text_hit_ms = timed(lambda q=q: cached_text.search(q, 5) for q in queries)
    image_hit_ms = timed(lambda p=p: cached_image.search(p, 5) for p in probes)

    # --- through the service on loopback ---
    server = start_background(create_app(Toolbox(text=cached_text, image=cached_image), token="bench", cache=cache))
    remote_cfg = load_config(None, [f'tools.remote.url="{server.url}"']).tools.remote
    remote_text = RemoteTextSearch(remote_cfg, token="bench")
    remote_ms = timed(lambda q=q: remote_text.search(q, 5) for q in queries)
    server.stop()

    print(f"\n{args.pages} pages, {args.images} thumbnails, {args.queries} queries each\n")
    if reuse:
        print("index builds: skipped (--reuse)")
    else:
        print(f"{'text index build':<34} {text_build:8.1f} s   ({args.pages / text_build:,.0f} pages/s)")
        print(f"{'image index build (embedding incl.)':<34} {image_build:8.1f} s   ({args.images / image_build:,.0f} images/s)")
    report("text query (BM25 + summaries)", text_ms, 10)
    report("image query (embed + faiss)", image_ms, 10)
    report("text cache hit", text_hit_ms, 1)
    report("image cache hit (5 thumbnails)", image_hit_ms, 1)
    report("text query via service (hit)", remote_ms)
    print(f"\ncache-hit speed-up over live query: text {statistics.median(text_ms) / statistics.median(text_hit_ms):.1f}x, "
          f"image {statistics.median(image_ms) / statistics.median(image_hit_ms):.1f}x")
    print(f"image recall@1 of jittered re-renderings (first 100 probes): {found}%")
    print(f"cache: {cache.stats().as_dict()}")


if __name__ == "__main__":
    main()
