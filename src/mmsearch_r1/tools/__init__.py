"""Search tools: image search and text search, their local and web backends, a cache and a service.

``build_toolbox(cfg.tools)`` hands rollout the two tools the config asks for, each behind the cache.
Backends are imported only when chosen, so ``import mmsearch_r1.tools`` stays light.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from mmsearch_r1.errors import ConfigError
from mmsearch_r1.tools.base import ImageHit, ImageSearch, TextHit, TextSearch, Toolbox

if TYPE_CHECKING:
    from mmsearch_r1.tools.cache import SearchCache
    from mmsearch_r1.tools.config import ToolsConfig

__all__ = ["ImageHit", "ImageSearch", "TextHit", "TextSearch", "Toolbox", "build_toolbox", "build_image_search", "build_text_search", "default_cache_dir", "open_cache"]


def default_cache_dir() -> Path:
    """Where the cache lives when neither the config nor the caller names a folder: the user's cache folder.

    Keys carry each index's content fingerprint, so one folder safely serves many indexes and runs.
    """
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mmsearch-r1" / "search"


def _need(path: Path | None, key: str, command: str) -> Path:
    if path is None:
        raise ConfigError(f"{key} is not set; build an index with `mmsearch-r1 {command}` and set {key}=DIR.")
    return path


def build_image_search(cfg: "ToolsConfig") -> ImageSearch:
    """The bare image-search backend the config names (no cache)."""
    kind = cfg.image.type
    if kind == "local":
        from mmsearch_r1.tools.local_image import LocalImageSearch

        return LocalImageSearch(_need(cfg.image.index_dir, "tools.image.index_dir", "index image"))
    elif kind == "serpapi":
        from mmsearch_r1.tools.web import SerpApiLens

        return SerpApiLens(cfg)
    elif kind == "remote":
        from mmsearch_r1.tools.remote import RemoteImageSearch

        return RemoteImageSearch(cfg.remote)
    raise ConfigError(f"unknown image-search type `{kind}`; use local, serpapi or remote.")


def build_text_search(cfg: "ToolsConfig") -> TextSearch:
    """The bare text-search backend the config names (no cache)."""
    kind = cfg.text.type
    if kind == "local":
        from mmsearch_r1.tools.local_text import LocalTextSearch, SentenceTransformerEncoder

        encoder = SentenceTransformerEncoder(cfg.text.dense_model) if cfg.text.dense_model and cfg.text.retrieval != "bm25" else None
        index_dir = _need(cfg.text.index_dir, "tools.text.index_dir", "index text")
        return LocalTextSearch(index_dir, retrieval=cfg.text.retrieval, summary_chars=cfg.summary.max_chars, encoder=encoder)
    elif kind == "serpapi":
        from mmsearch_r1.tools.web import SerpApiGoogle

        return SerpApiGoogle(cfg)
    elif kind == "searxng":
        from mmsearch_r1.tools.web import SearxngSearch

        return SearxngSearch(cfg)
    elif kind == "remote":
        from mmsearch_r1.tools.remote import RemoteTextSearch

        return RemoteTextSearch(cfg.remote)
    raise ConfigError(f"unknown text-search type `{kind}`; use local, serpapi, searxng or remote.")


def open_cache(cfg: "ToolsConfig", cache_dir: str | Path | None = None) -> "SearchCache | None":
    """The cache the config asks for (None when its mode is off); folder: config, else ``cache_dir``, else the user's."""
    from mmsearch_r1.tools.cache import SearchCache

    if cfg.cache.mode == "off":
        return None
    folder = cfg.cache.dir or cache_dir or default_cache_dir()
    return SearchCache(folder, mode=cfg.cache.mode, size_limit_gb=cfg.cache.size_limit_gb)


def build_toolbox(cfg: "ToolsConfig", cache_dir: str | Path | None = None, *, image: bool = True, text: bool = True) -> Toolbox:
    """Image and text search as configured, each behind the cache.

    A remote backend is not cached again here: the service keeps the cache. Pass ``image=False`` or
    ``text=False`` to leave a tool out (e.g. the direct-answer workflow needs none).
    """
    from mmsearch_r1.tools.cache import CachedImageSearch, CachedTextSearch

    cache = open_cache(cfg, cache_dir)
    image_search = build_image_search(cfg) if image else None
    text_search = build_text_search(cfg) if text else None
    if cache is not None:
        if image_search is not None and cfg.image.type != "remote":
            image_search = CachedImageSearch(image_search, cache)
        if text_search is not None and cfg.text.type != "remote":
            text_search = CachedTextSearch(text_search, cache)
    return Toolbox(image=image_search, text=text_search)
