"""Clients of the search service (``mmsearch-r1 serve``): ``RemoteImageSearch`` and ``RemoteTextSearch``
implement the same interfaces as the local tools and raise the same ``ToolError`` classes.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from mmsearch_r1 import errors
from mmsearch_r1.errors import ToolBadResponse, ToolError, ToolTimeout
from mmsearch_r1.tools.base import ImageHit, ImageSearch, TextHit, TextSearch
from mmsearch_r1.tools.cache import image_hits_from_rows, text_hits_from_rows

if TYPE_CHECKING:
    from PIL import Image

    from mmsearch_r1.tools.config import RemoteConfig

TOOL_ERRORS = {cls.__name__: cls for cls in (errors.ToolTimeout, errors.ToolRateLimited, errors.ToolBadResponse, errors.ToolRefusedTarget, errors.CacheMiss, errors.ToolError)}


class ServiceClient:
    """HTTP calls to a search service, with its errors turned back into the same ``ToolError`` classes."""

    def __init__(self, url: str, token: str, timeout_s: float = 60.0):
        import httpx

        self.url = url.rstrip("/")
        self._client = httpx.Client(base_url=self.url, timeout=timeout_s, headers={"Authorization": f"Bearer {token}"})

    def post(self, path: str, payload: dict) -> list[dict]:
        import httpx

        try:
            response = self._client.post(path, json=payload)
        except httpx.TimeoutException:
            raise ToolTimeout(f"the search service at {self.url} did not answer in time.") from None
        except httpx.HTTPError as error:
            raise ToolBadResponse(f"the search service at {self.url} is unreachable ({type(error).__name__}); start it with `mmsearch-r1 serve`.") from None
        return self._hits(response)

    def get(self, path: str) -> dict:
        response = self._client.get(path)
        if response.status_code != 200:
            raise ToolBadResponse(f"the search service at {self.url} answered HTTP {response.status_code} to {path}.")
        return response.json()

    def _hits(self, response: Any) -> list[dict]:
        try:
            data = response.json()
        except ValueError:
            raise ToolBadResponse(f"the search service at {self.url} answered HTTP {response.status_code} without JSON.") from None
        if response.status_code == 200 and isinstance(data, dict) and isinstance(data.get("hits"), list):
            return data["hits"]
        if response.status_code == 401:
            raise ToolError(f"the search service at {self.url} refused the token; set the same token on both sides.")
        error_type = TOOL_ERRORS.get(data.get("error") if isinstance(data, dict) else None, ToolBadResponse)
        message = (data.get("message") or data.get("detail")) if isinstance(data, dict) else None
        raise error_type(str(message or f"the search service answered HTTP {response.status_code}."))

    def close(self) -> None:
        self._client.close()


def _token(cfg: "RemoteConfig") -> str:
    from mmsearch_r1.tools.webclient import secret_from_env

    return secret_from_env(cfg.token_env, "search service token")


class RemoteImageSearch(ImageSearch):
    """Image search served by a ``mmsearch-r1 serve`` service."""

    name = "remote_image"

    def __init__(self, cfg: "RemoteConfig", token: str | None = None):
        self.client = ServiceClient(cfg.url, token if token is not None else _token(cfg), cfg.timeout_s)

    @property
    def cache_id(self) -> str:
        return f"remote:{self.client.url}"

    def search(self, image: "Image.Image", k: int = 5) -> list[ImageHit]:
        from mmsearch_r1.tools.local_image import encode_png

        payload = {"image": base64.b64encode(encode_png(image)).decode(), "k": k}
        return image_hits_from_rows(self.client.post("/v1/search/image", payload))


class RemoteTextSearch(TextSearch):
    """Text search served by a ``mmsearch-r1 serve`` service."""

    name = "remote_text"

    def __init__(self, cfg: "RemoteConfig", token: str | None = None):
        self.client = ServiceClient(cfg.url, token if token is not None else _token(cfg), cfg.timeout_s)

    @property
    def cache_id(self) -> str:
        return f"remote:{self.client.url}"

    def search(self, query: str, k: int = 5) -> list[TextHit]:
        return text_hits_from_rows(self.client.post("/v1/search/text", {"query": query, "k": k}))
