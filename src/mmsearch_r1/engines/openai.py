"""The OpenAI-compatible engine: chat completions over HTTP (vLLM serve, SGLang, hosted API models).

Each context becomes one ``POST {base_url}/chat/completions`` with its messages; images go inline as
PNG data URLs in context order. Requests of a batch run concurrently up to ``max_concurrency``; a timeout,
a connection error, HTTP 429 or a 5xx is retried ``max_retries`` times with exponential backoff. The API
key is read from the environment variable ``api_key_env`` and sent as a bearer token; it never appears in
errors or logs.

Text only: the server tokenizes, so trajectories from this engine have empty ``token_ids``/``loss_mask``/
``logprobs``; with ``logprobs = true`` and a server that supports it, the per-token log-probs of each turn
are kept in ``trajectory.meta["turn_logprobs"]``. Use it for evaluation and baselines, not for training.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
from typing import TYPE_CHECKING, Any

from mmsearch_r1.engines.base import Context, Engine, EngineError, GeneratedTurn, run_async
from mmsearch_r1.trajectory import ImageRef

if TYPE_CHECKING:
    import httpx
    from PIL import Image

    from mmsearch_r1.engines.config import OpenAIEngineConfig, SamplingConfig

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


def data_url(image: "Image.Image") -> str:
    """The image as a ``data:image/png;base64,...`` URL."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def chat_messages(context: Context, urls: dict[int, str] | None = None) -> list[dict]:
    """The context's messages in the chat-completions format; user turns carry their images as data URLs.

    ``urls`` caches data URLs by ``id(image)`` across the contexts of a batch.

    >>> from mmsearch_r1.trajectory import Message
    >>> chat_messages(Context([Message("system", ["Be brief."]), Message("assistant", ["<answer>x</answer>"])], []))
    [{'role': 'system', 'content': 'Be brief.'}, {'role': 'assistant', 'content': '<answer>x</answer>'}]
    """
    urls = {} if urls is None else urls
    out = []
    for message in context.messages:
        if message.role != "user":
            out.append({"role": message.role, "content": message.text})
            continue
        parts = []
        for part in message.content:
            if isinstance(part, ImageRef):
                image = context.images[part.index]
                if id(image) not in urls:
                    urls[id(image)] = data_url(image)
                parts.append({"type": "image_url", "image_url": {"url": urls[id(image)]}})
            elif part:
                parts.append({"type": "text", "text": part})
        out.append({"role": "user", "content": parts})
    return out


class OpenAIEngine(Engine):
    """Generates turns through any OpenAI-compatible chat-completions server."""

    encoder = None

    def __init__(self, cfg: "OpenAIEngineConfig", *, transport: "httpx.AsyncBaseTransport | None" = None):
        self.cfg = cfg
        self.base_url = cfg.base_url.rstrip("/")
        self.model_name = cfg.model_name or None
        self._transport = transport  # tests may pass an in-memory transport

    def generate(self, contexts: list[Context], sampling: "SamplingConfig", *, seed: int | None = None) -> list[GeneratedTurn]:
        if not contexts:
            return []
        return run_async(lambda: self._generate(contexts, sampling, seed))

    # --- requests ------------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.cfg.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def _generate(self, contexts: list[Context], sampling: "SamplingConfig", seed: int | None) -> list[GeneratedTurn]:
        import httpx

        limits = asyncio.Semaphore(self.cfg.max_concurrency)
        async with httpx.AsyncClient(timeout=self.cfg.timeout_s, headers=self._headers(), transport=self._transport) as client:
            if self.model_name is None:
                self.model_name = await self._first_model(client, limits)
            urls: dict[int, str] = {}
            bodies = [self._body(chat_messages(c, urls), sampling, None if seed is None else seed + i) for i, c in enumerate(contexts)]
            replies = await asyncio.gather(*(self._request(client, limits, "POST", "/chat/completions", b) for b in bodies))
        return [self._turn(reply) for reply in replies]

    def _body(self, messages: list[dict], sampling: "SamplingConfig", seed: int | None) -> dict:
        body: dict[str, Any] = {
            "model": self.model_name, "messages": messages, "temperature": sampling.temperature, "top_p": sampling.top_p,
            "max_tokens": sampling.max_new_tokens,
        }
        if seed is not None:
            body["seed"] = seed
        if self.cfg.logprobs:
            body["logprobs"] = True
        return body

    async def _first_model(self, client: "httpx.AsyncClient", limits: asyncio.Semaphore) -> str:
        reply = await self._request(client, limits, "GET", "/models", None)
        try:
            return str(reply["data"][0]["id"])
        except (KeyError, IndexError, TypeError):
            raise EngineError(f"the server at {self.base_url} lists no model under /models; set engine.openai.model_name (--model-name).") from None

    async def _request(self, client: "httpx.AsyncClient", limits: asyncio.Semaphore, method: str, path: str, body: dict | None) -> dict:
        """One request with retries on timeouts, connection errors, 429 and 5xx; the parsed JSON reply."""
        import httpx

        url = self.base_url + path
        problem = ""
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                await asyncio.sleep(self.cfg.backoff_s * 2 ** (attempt - 1))
            try:
                async with limits:
                    response = await client.request(method, url, json=body)
            except httpx.TimeoutException:
                problem = f"no answer within {self.cfg.timeout_s:g} s"
                continue
            except httpx.TransportError as error:
                problem = f"cannot connect ({type(error).__name__})"
                continue
            if response.status_code in RETRY_STATUS:
                problem = f"HTTP {response.status_code}"
                continue
            return self._parse(response, url)
        raise EngineError(
            f"the model server at {url} failed {self.cfg.max_retries + 1} times ({problem}); "
            "check that it is running and reachable, or fix engine.openai.base_url (--base-url)."
        )

    def _parse(self, response: "httpx.Response", url: str) -> dict:
        if response.status_code in (401, 403):
            raise EngineError(f"the model server at {url} refused the API key (HTTP {response.status_code}); put a valid key in ${self.cfg.api_key_env}.")
        if response.status_code >= 400:
            detail = " ".join(response.text.split())[:200]
            raise EngineError(f"the model server at {url} rejected the request (HTTP {response.status_code}: {detail}); check the model name and sampling settings.")
        try:
            return response.json()
        except ValueError:
            raise EngineError(f"the model server at {url} answered with something that is not JSON; point --base-url at an OpenAI-compatible /v1 endpoint.") from None

    def _turn(self, reply: dict) -> GeneratedTurn:
        try:
            choice = reply["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise EngineError(f"the model server at {self.base_url} sent a reply without choices[0].message; is it an OpenAI-compatible server?") from None
        content = (choice.get("logprobs") or {}).get("content") or []
        logprobs = [float(item["logprob"]) for item in content if isinstance(item, dict) and "logprob" in item]
        return GeneratedTurn(text, logprobs=logprobs, finish_reason="length" if choice.get("finish_reason") == "length" else "stop")
