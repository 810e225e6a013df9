"""A persistent, process-safe cache in front of every search backend, with record and replay.

Storage is ``diskcache`` (SQLite in WAL mode: many processes may read and write one folder at once).
A key is the SHA-256 of the backend's ``cache_id`` (its name plus the index or endpoint it uses) and the
normalized arguments: the query folded to NFKC lower case with single spaces, or the image's content hash
(over its pixels, not its file encoding), and k. Values are the hits as JSON (thumbnails as PNG, base64).

Modes:
  ``use``     return a stored answer, else call the backend and store its answer;
  ``record``  always call the backend and store (refreshes entries);
  ``replay``  return a stored answer, else raise ``CacheMiss`` — never a live call;
  ``off``     no cache (``build_toolbox`` then hands out the bare backend).

Counters (shared by every process using the folder): hits, misses, live calls, failures and the estimated
cost of live calls to paid APIs. A failed call is counted and re-raised; failures are never stored.

>>> import tempfile
>>> from mmsearch_r1.tools.base import TextHit, TextSearch
>>> class Echo(TextSearch):
...     def search(self, query, k=5):
...         return [TextHit("t", "http://u", query)]
>>> cached = CachedTextSearch(Echo(), SearchCache(tempfile.mkdtemp()))
>>> cached.search("Hello  World")[0].summary, cached.search("hello world")[0].summary
('Hello  World', 'Hello  World')
>>> stats = cached.cache.stats(); (stats.hits, stats.misses, stats.live_calls)
(1, 1, 1)
"""

from __future__ import annotations

import base64
import hashlib
import json
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal, Sequence, TypeVar

from mmsearch_r1.errors import CacheMiss, ConfigError, ToolError
from mmsearch_r1.tools.base import ImageHit, ImageSearch, TextHit, TextSearch

if TYPE_CHECKING:
    from PIL import Image

CacheMode = Literal["use", "record", "replay"]
Hit = TypeVar("Hit")
_COST_UNIT = 1_000_000  # cost is counted in micro-dollars so that the shared counter stays an integer
COUNTERS = ("hits", "misses", "live_calls", "failures", "cost_micro_usd")


@dataclass(frozen=True)
class CacheStats:
    """Counts of a cache folder, summed over every process that used it."""

    entries: int
    hits: int
    misses: int
    live_calls: int
    failures: int
    cost_usd: float

    def as_dict(self) -> dict:
        return asdict(self)


# --- keys ----------------------------------------------------------------------------------------


def normalize_query(query: str) -> str:
    """Query text as the cache sees it: NFKC, case-folded, whitespace collapsed.

    >>> normalize_query("  Capital of\\tZORBLAX ")
    'capital of zorblax'
    """
    return " ".join(unicodedata.normalize("NFKC", query).casefold().split())


def image_digest(image: "Image.Image") -> str:
    """SHA-256 of an image's content (mode, size, pixels): the same picture saved as PNG or BMP hashes alike."""
    rgb = image.convert("RGB")
    digest = hashlib.sha256(f"RGB:{rgb.size[0]}x{rgb.size[1]}:".encode())
    digest.update(rgb.tobytes())
    return digest.hexdigest()


def cache_key(backend_id: str, **arguments: object) -> str:
    """The key of one call: SHA-256 of the backend id and its (already normalized) arguments."""
    payload = json.dumps([backend_id, arguments], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


# --- (de)serializing hits: rows of plain JSON types (the cache and the search service share them) -


def text_hit_rows(hits: Sequence[TextHit]) -> list[dict]:
    return [asdict(h) for h in hits]


def text_hits_from_rows(rows: list[dict]) -> list[TextHit]:
    return [TextHit(title=r["title"], url=r["url"], summary=r["summary"], score=float(r.get("score", 0.0))) for r in rows]


def image_hit_rows(hits: Sequence[ImageHit]) -> list[dict]:
    """Rows with the thumbnail as base64 PNG."""
    from mmsearch_r1.tools.local_image import encode_png

    return [{"thumbnail": base64.b64encode(encode_png(h.thumbnail)).decode(), "title": h.title, "url": h.url, "score": h.score} for h in hits]


def image_hits_from_rows(rows: list[dict]) -> list[ImageHit]:
    from mmsearch_r1.tools.local_image import decode_image

    return [
        ImageHit(thumbnail=decode_image(base64.b64decode(r["thumbnail"]), "a thumbnail"), title=r["title"], url=r["url"], score=float(r.get("score", 0.0)))
        for r in rows
    ]


def encode_text_hits(hits: Sequence[TextHit]) -> bytes:
    return json.dumps(text_hit_rows(hits), ensure_ascii=False).encode()


def decode_text_hits(data: bytes) -> list[TextHit]:
    return text_hits_from_rows(json.loads(data))


def encode_image_hits(hits: Sequence[ImageHit]) -> bytes:
    return json.dumps(image_hit_rows(hits), ensure_ascii=False).encode()


def decode_image_hits(data: bytes) -> list[ImageHit]:
    return image_hits_from_rows(json.loads(data))


# --- the store -----------------------------------------------------------------------------------


class SearchCache:
    """A cache folder: entries plus shared counters. Safe to open from many processes at once."""

    def __init__(self, directory: str | Path, mode: CacheMode = "use", size_limit_gb: float = 8.0):
        import diskcache

        if mode not in ("use", "record", "replay"):
            raise ConfigError(f"cache mode `{mode}` is not one of use, record, replay.")
        self.directory = Path(directory)
        self.mode = mode
        self._store = diskcache.Cache(str(self.directory), size_limit=int(size_limit_gb * 2**30), timeout=60)
        # Counters live apart, never evicted when the entries outgrow the size limit.
        self._counters = diskcache.Cache(str(self.directory / "counters"), eviction_policy="none", timeout=60)

    def get(self, key: str) -> bytes | None:
        return self._store.get(key)

    def put(self, key: str, value: bytes) -> None:
        self._store.set(key, value)

    def count(self, counter: str, amount: int = 1) -> None:
        """Add to a shared counter (atomic across processes)."""
        self._counters.incr(counter, amount, default=0, retry=True)

    def stats(self) -> CacheStats:
        counts = {name: int(self._counters.get(name, 0, retry=True)) for name in COUNTERS}
        return CacheStats(
            entries=len(self._store),
            hits=counts["hits"],
            misses=counts["misses"],
            live_calls=counts["live_calls"],
            failures=counts["failures"],
            cost_usd=counts["cost_micro_usd"] / _COST_UNIT,
        )

    def close(self) -> None:
        self._store.close()
        self._counters.close()

    def call(self, key: str, live: Callable[[], list[Hit]], encode: Callable, decode: Callable, cost_usd: float) -> list[Hit]:
        """Answer one call under this cache's mode; ``live`` makes the real call."""
        if self.mode != "record":
            stored = self.get(key)
            if stored is not None:
                self.count("hits")
                return decode(stored)
            self.count("misses")
            if self.mode == "replay":
                raise CacheMiss(f"the cache at {self.directory} holds no answer for this search and is in replay mode; record it first (cache mode use or record).")
        self.count("live_calls")
        try:
            hits = live()
        except ToolError:
            self.count("failures")
            raise
        if cost_usd:  # paid APIs bill answered searches
            self.count("cost_micro_usd", round(cost_usd * _COST_UNIT))
        self.put(key, encode(hits))
        return hits


# --- cached tools --------------------------------------------------------------------------------


class CachedTextSearch(TextSearch):
    """A text-search backend behind a ``SearchCache``."""

    def __init__(self, backend: TextSearch, cache: SearchCache):
        self.backend, self.cache = backend, cache
        self.name = backend.name

    @property
    def cache_id(self) -> str:
        return self.backend.cache_id

    def search(self, query: str, k: int = 5) -> list[TextHit]:
        key = cache_key(self.backend.cache_id, query=normalize_query(query), k=k)
        return self.cache.call(key, lambda: self.backend.search(query, k), encode_text_hits, decode_text_hits, self.backend.cost_per_call)


class CachedImageSearch(ImageSearch):
    """An image-search backend behind a ``SearchCache``."""

    def __init__(self, backend: ImageSearch, cache: SearchCache):
        self.backend, self.cache = backend, cache
        self.name = backend.name

    @property
    def cache_id(self) -> str:
        return self.backend.cache_id

    def search(self, image: "Image.Image", k: int = 5) -> list[ImageHit]:
        key = cache_key(self.backend.cache_id, image=image_digest(image), k=k)
        return self.cache.call(key, lambda: self.backend.search(image, k), encode_image_hits, decode_image_hits, self.backend.cost_per_call)
