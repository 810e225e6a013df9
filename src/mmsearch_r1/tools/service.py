"""The search service: one set of tools and one cache shared by many rollout workers over HTTP.

Endpoints (JSON; every one but ``/health`` needs ``Authorization: Bearer <token>``)::

    GET  /health              {"status": "ok", "image_search": bool, "text_search": bool}
    POST /v1/search/image     {"image": <base64 PNG/JPEG>, "k": int}  -> {"hits": [{thumbnail, title, url, score}]}
    POST /v1/search/text      {"query": str, "k": int}                -> {"hits": [{title, url, summary, score}]}
    GET  /v1/cache/stats      the cache's counters (CacheStats)
    GET  /images/<sha256>.png question images written for Google Lens (only when public_image_dir is set; no token)

A failing tool answers with ``{"error": <ToolError class>, "message": ...}`` and a status that says what
happened (504 timeout, 429 rate limit, 404 replay miss, 403 refused target, 502 other); ``RemoteImageSearch``
and ``RemoteTextSearch`` raise the same exception classes, so rollout code cannot tell local tools from
remote ones (``mmsearch_r1.tools.remote``). Bodies over ``max_body_bytes`` get 413, a ``k`` over ``max_k`` gets 422.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations at run time.

import base64
import hmac
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from mmsearch_r1.errors import ConfigError, DataError, ToolError
from mmsearch_r1.tools.base import Toolbox
from mmsearch_r1.tools.cache import SearchCache, image_hit_rows, text_hit_rows

ERROR_STATUS = {"ToolTimeout": 504, "ToolRateLimited": 429, "CacheMiss": 404, "ToolRefusedTarget": 403}


class ImageQuery(BaseModel):
    image: str = Field(description="The query image, base64-encoded PNG or JPEG.")
    k: int = Field(5, ge=1, description="Most hits to return.")


class TextQuery(BaseModel):
    query: str = Field(min_length=1, max_length=2000, description="The text query.")
    k: int = Field(5, ge=1, description="Most hits to return.")


def create_app(toolbox: Toolbox, *, token: str, max_body_bytes: int = 8_000_000, max_k: int = 20, cache: Optional[SearchCache] = None, public_image_dir: Optional[Path] = None) -> FastAPI:
    """The FastAPI app serving ``toolbox``; ``cache`` is the one its tools sit behind (for the stats endpoint)."""
    if not token:
        raise ConfigError("the search service needs a bearer token; export one in the environment variable named by tools.service.token_env.")

    app = FastAPI(title="mmsearch-r1 search service", version="1")

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        if request.method == "POST":
            length = request.headers.get("content-length")
            if length is None or not length.isdigit():
                return JSONResponse({"error": "LengthRequired", "message": "send a Content-Length header."}, status_code=411)
            if int(length) > max_body_bytes:
                return JSONResponse({"error": "TooLarge", "message": f"the body is over {max_body_bytes} bytes; send a smaller image."}, status_code=413)
        return await call_next(request)

    def authorized(request: Request) -> None:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise HTTPException(status_code=401, detail="missing or wrong bearer token")

    def check_k(k: int) -> None:
        if k > max_k:
            raise HTTPException(status_code=422, detail=f"k={k} is over this service's limit of {max_k}.")

    @app.exception_handler(ToolError)
    async def tool_error(_: Request, error: ToolError):
        name = type(error).__name__
        return JSONResponse({"error": name, "message": str(error)}, status_code=ERROR_STATUS.get(name, 502))

    @app.exception_handler(DataError)
    async def data_error(_: Request, error: DataError):
        return JSONResponse({"error": "DataError", "message": str(error)}, status_code=400)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "image_search": toolbox.image is not None, "text_search": toolbox.text is not None}

    @app.post("/v1/search/image", dependencies=[Depends(authorized)])
    def search_image(query: ImageQuery) -> dict:
        from mmsearch_r1.tools.local_image import decode_image

        check_k(query.k)
        if toolbox.image is None:
            raise HTTPException(status_code=404, detail="this service has no image search.")
        try:
            data = base64.b64decode(query.image, validate=True)
        except ValueError:
            raise DataError("the image field is not valid base64.") from None
        image = decode_image(data, "the posted image")
        return {"hits": image_hit_rows(toolbox.image.search(image, query.k))}

    @app.post("/v1/search/text", dependencies=[Depends(authorized)])
    def search_text(query: TextQuery) -> dict:
        check_k(query.k)
        if toolbox.text is None:
            raise HTTPException(status_code=404, detail="this service has no text search.")
        return {"hits": text_hit_rows(toolbox.text.search(query.query, query.k))}

    @app.get("/v1/cache/stats", dependencies=[Depends(authorized)])
    def cache_stats() -> dict:
        return cache.stats().as_dict() if cache is not None else {}

    if public_image_dir is not None:
        from fastapi.staticfiles import StaticFiles

        Path(public_image_dir).mkdir(parents=True, exist_ok=True)
        app.mount("/images", StaticFiles(directory=str(public_image_dir)), name="images")
    return app


# --- running it ----------------------------------------------------------------------------------


@dataclass
class BackgroundServer:
    """A uvicorn server running in a daemon thread (tests, benchmarks, notebooks)."""

    server: Any
    thread: threading.Thread
    url: str

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_background(app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> BackgroundServer:
    """Start ``app`` on ``host:port`` (0: a free port) in a thread; returns once it accepts connections."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise ConfigError(f"the search service could not start on {host}:{port}; is the port in use?")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    return BackgroundServer(server, thread, f"http://{host}:{bound}")
