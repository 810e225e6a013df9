"""Config of the search tools: which backend serves each tool, and the cache in front of them."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from mmsearch_r1.config import Section


class CacheConfig(Section):
    """The persistent cache in front of every search backend."""

    mode: Literal["use", "record", "replay", "off"] = Field("use", description="use: read and write; record: always call and store; replay: never call live; off: no cache.")
    dir: Path | None = Field(None, description="Cache folder; None puts it under the run's output folder.")


class ImageToolConfig(Section):
    """The image-search backend."""

    type: Literal["local", "serpapi", "remote"] = Field("local", description="local index, SerpAPI Google Lens, or a `mmsearch-r1 serve` service.")
    index_dir: Path | None = Field(None, description="Folder of a local image index (`mmsearch-r1 index image`).")


class TextToolConfig(Section):
    """The text-search backend."""

    type: Literal["local", "serpapi", "searxng", "remote"] = Field("local", description="local BM25 index, SerpAPI Google, SearXNG, or a `mmsearch-r1 serve` service.")
    index_dir: Path | None = Field(None, description="Folder of a local text index (`mmsearch-r1 index text`).")


class ToolsConfig(Section):
    """Image search, text search and their cache."""

    image: ImageToolConfig = Field(default_factory=ImageToolConfig, description="The image-search backend.")
    text: TextToolConfig = Field(default_factory=TextToolConfig, description="The text-search backend.")
    cache: CacheConfig = Field(default_factory=CacheConfig, description="The cache in front of both.")
