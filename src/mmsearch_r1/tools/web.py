"""Web search backends: SerpAPI Google Lens (image), SerpAPI Google and SearXNG (text).

Text search is: ask the engine for results (title, link, snippet) → fetch each page (public targets only,
size-capped) → extract its main text with ``trafilatura`` → summarize it for the query, by an LLM behind
an OpenAI-compatible endpoint or by the extractive summary (also the fallback when the LLM fails). A page
that cannot be fetched or yields no text is summarized by its snippet.

Image search is: hand Google Lens a public URL of the question image → fetch each visual match's thumbnail.
Lens cannot take an upload through SerpAPI, so the image must be reachable: either the image carries its
own URL (``image.info["url"]``, e.g. from a data set's ``image_urls``) or it is written by content hash into
``tools.image.public_image_dir``, a folder a public web server serves at ``public_image_base_url``.

Keys come from environment variables and are redacted from every error and log line (``webclient``).
"""

from __future__ import annotations

import base64
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mmsearch_r1.errors import DataError, ToolBadResponse, ToolError
from mmsearch_r1.tools.base import ImageHit, ImageSearch, TextHit, TextSearch
from mmsearch_r1.tools.summary import extractive_summary
from mmsearch_r1.tools.webclient import Resolver, WebClient, redact, secret_from_env, system_resolver

if TYPE_CHECKING:
    from PIL import Image

    from mmsearch_r1.tools.config import SummaryConfig, ToolsConfig

log = logging.getLogger("mmsearch_r1.tools.web")
NO_RESULTS = "hasn't returned any results"  # SerpAPI's "error" text for an empty result page


@dataclass(frozen=True)
class SearchResult:
    """One result as a search engine lists it, before its page is fetched."""

    title: str
    url: str
    snippet: str


# --- pages and summaries -------------------------------------------------------------------------


def extract_main_text(html: bytes | str, max_chars: int) -> str:
    """The main text of an HTML page (boilerplate, menus and comments dropped), at most ``max_chars``."""
    import trafilatura

    text = trafilatura.extract(html, include_comments=False, include_tables=False, favor_precision=True) or ""
    return text[:max_chars]


class LLMSummarizer:
    """Summaries by a chat model behind an OpenAI-compatible ``/chat/completions`` endpoint."""

    PROMPT = (
        "Summarize what this web page says that helps answer the question, in at most {max_chars} characters. "
        "Keep names, numbers and facts verbatim; say nothing the page does not say.\n\n"
        "Question: {query}\n\nPage title: {title}\n\nPage text:\n{text}"
    )

    def __init__(self, cfg: "SummaryConfig", client: WebClient, api_key: str = ""):
        self.cfg, self.client, self.api_key = cfg, client, api_key

    def summarize(self, query: str, title: str, text: str) -> str:
        """The model's summary; the extractive summary when the endpoint fails or answers nothing usable."""
        try:
            return self._ask(query, title, text)
        except ToolError as error:
            log.warning("LLM summary failed, using the extractive one: %s", redact(str(error), [self.api_key]))
            return extractive_summary(text, query, self.cfg.max_chars)

    def _ask(self, query: str, title: str, text: str) -> str:
        prompt = self.PROMPT.format(max_chars=self.cfg.max_chars, query=query, title=title, text=text)
        body = {"model": self.cfg.llm_model, "messages": [{"role": "user", "content": prompt}], "temperature": 0, "max_tokens": max(16, self.cfg.max_chars // 3)}
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        url = self.cfg.llm_base_url.rstrip("/") + "/chat/completions"
        data = self.client.api("POST", url, json=body, headers=headers, timeout=self.cfg.llm_timeout_s).json("the summarizing LLM")
        try:
            summary = str(data["choices"][0]["message"]["content"]).strip()
        except (KeyError, IndexError, TypeError):
            raise ToolBadResponse("the summarizing LLM answered without choices[0].message.content.") from None
        if not summary:
            raise ToolBadResponse("the summarizing LLM answered with an empty summary.")
        return summary[: self.cfg.max_chars]


class PageSummaries:
    """Turns engine results into ``TextHit``s: fetch, extract, summarize; the snippet when a page fails."""

    def __init__(self, cfg: "ToolsConfig", client: WebClient, summarizer: LLMSummarizer | None):
        self.cfg, self.client, self.summarizer = cfg, client, summarizer

    def page_text(self, url: str) -> str:
        """The main text of the page at ``url``, or "" when it cannot be fetched or is not HTML/text."""
        try:
            response = self.client.fetch(url)
        except ToolError as error:
            log.info("page not used: %s", error)
            return ""
        kind = response.content_type.split(";")[0].strip().lower()
        if kind == "text/plain":
            return response.body.decode("utf-8", "replace")[: self.cfg.web.max_page_chars]
        if kind not in ("text/html", "application/xhtml+xml", ""):
            return ""
        return extract_main_text(response.body, self.cfg.web.max_page_chars)

    def summarize(self, query: str, result: SearchResult) -> TextHit:
        text = self.page_text(result.url) if self.cfg.web.fetch_pages else ""
        if not text:
            summary = result.snippet[: self.cfg.summary.max_chars]
        elif self.summarizer is not None:
            summary = self.summarizer.summarize(query, result.title, text)
        else:
            summary = extractive_summary(text, query, self.cfg.summary.max_chars)
        return TextHit(title=result.title, url=result.url, summary=summary)

    def hits(self, query: str, results: list[SearchResult]) -> list[TextHit]:
        if not results:
            return []
        with ThreadPoolExecutor(max_workers=min(8, len(results))) as pool:
            return list(pool.map(lambda r: self.summarize(query, r), results))


def _summaries(cfg: "ToolsConfig", client: WebClient) -> PageSummaries:
    summarizer = None
    if cfg.summary.type == "llm":
        key = secret_from_env(cfg.summary.llm_api_key_env, "summarizer API key", required=False)
        summarizer = LLMSummarizer(cfg.summary, client, key)
    return PageSummaries(cfg, client, summarizer)


def _field(row: dict, *names: str) -> str:
    for name in names:
        value = row.get(name)
        if isinstance(value, str) and value:
            return value
    return ""


def _results(rows: object, engine: str, link: str, snippet: str) -> list[SearchResult]:
    if not isinstance(rows, list):
        raise ToolBadResponse(f"{engine} answered without a list of results.")
    results = [SearchResult(_field(r, "title"), _field(r, link), _field(r, snippet)) for r in rows if isinstance(r, dict)]
    return [r for r in results if r.url]


# --- SerpAPI -------------------------------------------------------------------------------------


class _SerpApi:
    """What both SerpAPI backends share: the key, the client, the call and its error handling."""

    engine: str

    def __init__(self, cfg: "ToolsConfig", resolver: Resolver = system_resolver):
        self.cfg = cfg
        self.api_key = secret_from_env(cfg.serpapi.api_key_env, "SerpAPI key")
        self.client = WebClient(f"SerpAPI {self.engine}", cfg.web, secrets=[self.api_key], resolver=resolver)
        self.cost_per_call = cfg.serpapi.cost_per_search_usd

    @property
    def cache_id(self) -> str:
        return f"serpapi:{self.engine}:{self.cfg.serpapi.hl}"

    def call(self, **params: str | int) -> dict:
        url = self.cfg.serpapi.base_url.rstrip("/") + "/search.json"
        query = {"engine": self.engine, "api_key": self.api_key, "hl": self.cfg.serpapi.hl, **params}
        data = self.client.api("GET", url, params=query).json(f"SerpAPI {self.engine}")
        if not isinstance(data, dict):
            raise ToolBadResponse(f"SerpAPI {self.engine} answered with JSON that is not an object.")
        error = data.get("error")
        if error and NO_RESULTS not in str(error):
            raise ToolBadResponse(redact(f"SerpAPI {self.engine} answered with an error: {str(error)[:200]}", [self.api_key]))
        return data


class SerpApiGoogle(_SerpApi, TextSearch):
    """Google web search through SerpAPI; results are fetched and summarized."""

    name = "serpapi_google"
    engine = "google"

    def __init__(self, cfg: "ToolsConfig", resolver: Resolver = system_resolver):
        super().__init__(cfg, resolver)
        self.pages = _summaries(cfg, WebClient("page fetch", cfg.web, resolver=resolver, rate_limit_per_s=cfg.web.fetch_rate_limit_per_s))

    def search(self, query: str, k: int = 5) -> list[TextHit]:
        data = self.call(q=query, num=k)
        results = _results(data.get("organic_results", []), "SerpAPI google", "link", "snippet")[:k]
        return self.pages.hits(query, results)


class SerpApiLens(_SerpApi, ImageSearch):
    """Google Lens visual matches through SerpAPI: thumbnail + title + page link."""

    name = "serpapi_lens"
    engine = "google_lens"

    def __init__(self, cfg: "ToolsConfig", resolver: Resolver = system_resolver):
        super().__init__(cfg, resolver)
        self.fetcher = WebClient("thumbnail fetch", cfg.web, resolver=resolver, rate_limit_per_s=cfg.web.fetch_rate_limit_per_s)

    def public_url(self, image: "Image.Image") -> str:
        """A URL at which Google can fetch ``image`` (see the module docstring)."""
        from mmsearch_r1.tools.cache import image_digest
        from mmsearch_r1.tools.local_image import encode_png

        if image.info.get("url"):
            return str(image.info["url"])
        folder, base = self.cfg.image.public_image_dir, self.cfg.image.public_image_base_url
        if folder is None or not base:
            raise ToolError("Google Lens needs a public URL of the image; set tools.image.public_image_dir and public_image_base_url, or give images an info['url'].")
        name = f"{image_digest(image)}.png"
        target = Path(folder) / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(encode_png(image))
        return f"{base.rstrip('/')}/{name}"

    def thumbnail(self, url: str) -> "Image.Image | None":
        """The thumbnail at ``url`` (a data URL or a public http(s) URL), or None when it cannot be had."""
        from mmsearch_r1.tools.local_image import decode_image

        try:
            if url.startswith("data:image/") and ";base64," in url:
                return decode_image(base64.b64decode(url.split(",", 1)[1]), "a Lens thumbnail")
            return decode_image(self.fetcher.fetch(url).body, "a Lens thumbnail")
        except (ToolError, DataError, ValueError) as error:  # a broken thumbnail costs one hit, not the search
            log.info("thumbnail not used: %s", error)
            return None

    def search(self, image: "Image.Image", k: int = 5) -> list[ImageHit]:
        data = self.call(url=self.public_url(image))
        matches = _results(data.get("visual_matches", []), "SerpAPI google_lens", "link", "thumbnail")
        candidates = matches[: 2 * k]  # a few spares for thumbnails that fail to load
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(candidates)))) as pool:
            thumbnails = list(pool.map(lambda m: self.thumbnail(m.snippet), candidates))
        hits = [ImageHit(thumbnail=t, title=m.title, url=m.url) for m, t in zip(candidates, thumbnails) if t is not None]
        return hits[:k]


# --- SearXNG -------------------------------------------------------------------------------------


class SearxngSearch(TextSearch):
    """A self-hosted SearXNG instance (its JSON output format must be enabled in settings.yml)."""

    name = "searxng"

    def __init__(self, cfg: "ToolsConfig", resolver: Resolver = system_resolver):
        self.cfg = cfg
        self.client = WebClient("SearXNG", cfg.web, resolver=resolver)
        self.pages = _summaries(cfg, WebClient("page fetch", cfg.web, resolver=resolver, rate_limit_per_s=cfg.web.fetch_rate_limit_per_s))

    @property
    def cache_id(self) -> str:
        return f"searxng:{self.cfg.searxng.base_url}"

    def search(self, query: str, k: int = 5) -> list[TextHit]:
        url = self.cfg.searxng.base_url.rstrip("/") + "/search"
        data = self.client.api("GET", url, params={"q": query, "format": "json"}).json("SearXNG")
        if not isinstance(data, dict):
            raise ToolBadResponse("SearXNG answered with JSON that is not an object.")
        results = _results(data.get("results", []), "SearXNG", "url", "content")[:k]
        return self.pages.hits(query, results)
