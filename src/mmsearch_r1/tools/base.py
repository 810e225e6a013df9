"""The two tool seams: ``ImageSearch`` and ``TextSearch``, and the hits they return.

Backends implement ``search`` (synchronous); ``asearch`` runs it in a worker thread so that rollout can
run a turn's tool calls concurrently from async code. Web backends that are natively async override
``asearch`` and get ``search`` for free through ``run_sync``. Failures are ``mmsearch_r1.errors.ToolError``
subclasses, which rollout turns into a feedback sentence and a counted failure.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class ImageHit:
    """One image-search result: a visually similar page, shown to the model as thumbnail + title."""

    thumbnail: "Image.Image"
    title: str
    url: str
    score: float = 0.0


@dataclass(frozen=True)
class TextHit:
    """One text-search result: a page and a short summary of what it says about the query."""

    title: str
    url: str
    summary: str
    score: float = 0.0


class ImageSearch(ABC):
    """Find the web pages whose images look most like ``image``."""

    name: str = "image_search"
    cost_per_call: float = 0.0  # USD per live call, for paid APIs; the cache counts it

    @property
    def cache_id(self) -> str:
        """What identifies this backend's answers in the cache: its name plus the index or endpoint it uses."""
        return self.name

    @abstractmethod
    def search(self, image: "Image.Image", k: int = 5) -> list[ImageHit]:
        """Return at most ``k`` hits, best first. Raises ``ToolError`` on failure."""

    async def asearch(self, image: "Image.Image", k: int = 5) -> list[ImageHit]:
        return await asyncio.to_thread(self.search, image, k)


class TextSearch(ABC):
    """Find the web pages that best answer ``query`` and summarize each."""

    name: str = "text_search"
    cost_per_call: float = 0.0  # USD per live call, for paid APIs; the cache counts it

    @property
    def cache_id(self) -> str:
        """What identifies this backend's answers in the cache: its name plus the index or endpoint it uses."""
        return self.name

    @abstractmethod
    def search(self, query: str, k: int = 5) -> list[TextHit]:
        """Return at most ``k`` hits, best first. Raises ``ToolError`` on failure."""

    async def asearch(self, query: str, k: int = 5) -> list[TextHit]:
        return await asyncio.to_thread(self.search, query, k)


@dataclass
class Toolbox:
    """The tools an episode may call; None where a workflow offers no such tool."""

    image: ImageSearch | None = None
    text: TextSearch | None = None
