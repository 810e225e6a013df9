"""Config of the search tools: which backend serves each tool, the cache in front of them, the web
backends' limits and keys, and the search service.

API keys are never config values: the config names the environment variable that holds each key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from mmsearch_r1.config import Section


class CacheConfig(Section):
    """The persistent cache in front of every search backend."""

    mode: Literal["use", "record", "replay", "off"] = Field("use", description="use: read and write; record: always call and store; replay: never call live; off: no cache.")
    dir: Path | None = Field(None, description="Cache folder; None puts it under the run's output folder.")
    size_limit_gb: float = Field(8.0, gt=0.0, le=4096.0, description="Most disk space the cache may use; the oldest entries are evicted beyond it.")


class ImageToolConfig(Section):
    """The image-search backend."""

    type: Literal["local", "serpapi", "remote"] = Field("local", description="local index, SerpAPI Google Lens, or a `mmsearch-r1 serve` service.")
    index_dir: Path | None = Field(None, description="Folder of a local image index (`mmsearch-r1 index image`).")
    public_image_dir: Path | None = Field(None, description="Google Lens only: folder where question images are written so a public web server can serve them.")
    public_image_base_url: str | None = Field(None, description="Google Lens only: public URL of public_image_dir (images are named <sha256>.png).")


class TextToolConfig(Section):
    """The text-search backend."""

    type: Literal["local", "serpapi", "searxng", "remote"] = Field("local", description="local BM25 index, SerpAPI Google, SearXNG, or a `mmsearch-r1 serve` service.")
    index_dir: Path | None = Field(None, description="Folder of a local text index (`mmsearch-r1 index text`).")
    retrieval: Literal["bm25", "dense", "hybrid"] = Field("bm25", description="Local index only: BM25, dense vectors, or both fused by reciprocal rank.")
    dense_model: Path | None = Field(None, description="Local index only: sentence-transformers folder for dense retrieval; None uses the one the index was built with.")


class SummaryConfig(Section):
    """How a text-search result's page becomes its summary."""

    type: Literal["extractive", "llm"] = Field("extractive", description="extractive: the query's best sentences; llm: an OpenAI-compatible model (extractive on failure).")
    max_chars: int = Field(300, ge=40, le=4000, description="Longest summary, in characters.")
    llm_base_url: str = Field("http://127.0.0.1:8000/v1", description="OpenAI-compatible endpoint (…/v1) of the summarizing model.")
    llm_model: str = Field("Qwen/Qwen2.5-7B-Instruct", description="Model name sent to the summarizing endpoint.")
    llm_api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the summarizer's API key (may be unset for local servers).")
    llm_timeout_s: float = Field(30.0, gt=0.0, le=600.0, description="Seconds to wait for one summary.")


class WebConfig(Section):
    """Limits shared by every web backend and by page fetching."""

    timeout_s: float = Field(15.0, gt=0.0, le=600.0, description="Seconds to wait for one HTTP request.")
    max_retries: int = Field(3, ge=0, le=10, description="Retries after a timeout, HTTP 429 or 5xx, with exponential backoff.")
    backoff_s: float = Field(1.0, ge=0.0, le=60.0, description="Wait before the first retry; doubled for each next one.")
    rate_limit_per_s: float = Field(5.0, gt=0.0, le=1000.0, description="Most requests per second to one backend (shared by the threads of a process).")
    fetch_rate_limit_per_s: float = Field(20.0, gt=0.0, le=1000.0, description="Most page and thumbnail fetches per second (shared by the threads of a process).")
    max_response_bytes: int = Field(5_000_000, ge=1024, le=1_000_000_000, description="Largest response body read; a bigger one is a failure.")
    max_redirects: int = Field(5, ge=0, le=20, description="Most redirects followed when fetching a page; each target is checked again.")
    fetch_pages: bool = Field(True, description="Fetch each text result's page and summarize its main text (else use the engine's snippet).")
    max_page_chars: int = Field(20_000, ge=500, le=1_000_000, description="Main text of a page kept for summarizing, in characters.")
    allow_loopback: bool = Field(False, description="Allow fetching from 127.0.0.1/localhost (tests and local servers only); private ranges stay refused.")


class SerpApiConfig(Section):
    """SerpAPI: Google Lens for image search, Google for text search."""

    base_url: str = Field("https://serpapi.com", description="SerpAPI endpoint; changed only for tests or a proxy.")
    api_key_env: str = Field("SERPAPI_API_KEY", description="Environment variable holding the SerpAPI key.")
    cost_per_search_usd: float = Field(0.015, ge=0.0, le=10.0, description="Price of one search, for the cache's cost count.")
    hl: str = Field("en", description="Interface language sent to Google.")


class SearxngConfig(Section):
    """A self-hosted SearXNG instance (JSON output enabled)."""

    base_url: str = Field("http://127.0.0.1:8888", description="Base URL of the SearXNG instance.")


class RemoteConfig(Section):
    """A `mmsearch-r1 serve` service used as the backend (type = remote)."""

    url: str = Field("http://127.0.0.1:8765", description="Base URL of the search service.")
    token_env: str = Field("MMSEARCH_SERVICE_TOKEN", description="Environment variable holding the service's bearer token.")
    timeout_s: float = Field(60.0, gt=0.0, le=600.0, description="Seconds to wait for one search.")


class ServiceConfig(Section):
    """The search service started by `mmsearch-r1 serve`."""

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8765, ge=0, le=65535, description="Port to listen on (0 picks a free one).")
    token_env: str = Field("MMSEARCH_SERVICE_TOKEN", description="Environment variable holding the bearer token clients must send.")
    max_body_bytes: int = Field(8_000_000, ge=1024, le=1_000_000_000, description="Largest request body accepted.")
    max_k: int = Field(20, ge=1, le=100, description="Largest k a client may ask for.")


class ToolsConfig(Section):
    """Image search, text search and their cache."""

    image: ImageToolConfig = Field(default_factory=ImageToolConfig, description="The image-search backend.")
    text: TextToolConfig = Field(default_factory=TextToolConfig, description="The text-search backend.")
    cache: CacheConfig = Field(default_factory=CacheConfig, description="The cache in front of both.")
    summary: SummaryConfig = Field(default_factory=SummaryConfig, description="How text results are summarized.")
    web: WebConfig = Field(default_factory=WebConfig, description="Limits of the web backends.")
    serpapi: SerpApiConfig = Field(default_factory=SerpApiConfig, description="SerpAPI settings.")
    searxng: SearxngConfig = Field(default_factory=SearxngConfig, description="SearXNG settings.")
    remote: RemoteConfig = Field(default_factory=RemoteConfig, description="The search service used when a tool's type is remote.")
    service: ServiceConfig = Field(default_factory=ServiceConfig, description="The search service `mmsearch-r1 serve` starts.")

    def with_local_indexes(self, folder: Path, *, only_unset: bool = False) -> "ToolsConfig":
        """A copy whose tools are the local indexes ``folder/image_index`` and ``folder/text_index`` (a demo world).

        With ``only_unset``, a tool keeps its own backend unless it is a local one with no index folder yet.
        """
        from mmsearch_r1.errors import ConfigError

        tools = self.model_copy(deep=True)
        for kind in ("image", "text"):
            index = Path(folder) / f"{kind}_index"
            tool = getattr(tools, kind)
            if only_unset and (tool.type != "local" or tool.index_dir is not None):
                continue
            if not index.is_dir():
                raise ConfigError(f"{folder} has no {index.name}/; pass a folder made by `mmsearch-r1 world build` (or `mmsearch-r1 index`).")
            tool.type, tool.index_dir = "local", index
        return tools
