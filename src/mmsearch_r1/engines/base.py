"""The engine seam: given a batch of episode contexts, return each one's next assistant turn.

An engine does one job. Rollout owns the episodes (messages, images, limits, tools); the engine samples
one turn for every live episode in a single call. Engines that run the policy's own tokenizer (Hugging
Face, vLLM) carry a ``ChatEncoder`` and work on token ids, so that the trajectory records exactly the
tokens the policy saw and sampled; engines behind an HTTP API (OpenAI-compatible servers) see messages
only and return text.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Literal, Sequence, TypeVar

from mmsearch_r1.errors import MMSearchError

if TYPE_CHECKING:
    from PIL import Image

    from mmsearch_r1.engines.chat import ChatEncoder
    from mmsearch_r1.engines.config import SamplingConfig
    from mmsearch_r1.trajectory import Message

FinishReason = Literal["stop", "length"]
T = TypeVar("T")


class EngineError(MMSearchError):
    """The engine cannot generate: a model that will not load, a server that cannot be reached."""


@dataclass
class TokenizedContext:
    """An episode's context as token ids, for engines that run the policy's tokenizer.

    ``token_ids`` is the whole episode so far, ending with the assistant generation prompt; ``pixel_values``
    and ``image_grid_thw`` hold one entry per image in context order (tensors of shape
    ``[patches_i, patch_dim]`` and ``[3]``), so that an image is processed once per episode.
    """

    token_ids: list[int]
    pixel_values: list[Any] = field(default_factory=list)
    image_grid_thw: list[Any] = field(default_factory=list)


@dataclass
class Context:
    """What the model sees before its next turn: the messages, the images in context order, and the tokens."""

    messages: list["Message"]
    images: list["Image.Image"]
    tokens: TokenizedContext | None = None


@dataclass
class GeneratedTurn:
    """One sampled assistant turn.

    For token-level engines ``token_ids`` is the turn's span as it goes into the episode, ending with the
    end-of-turn token; ``loss_mask`` is 1 on tokens the policy sampled and 0 on an end-of-turn token added
    after a turn cut at ``max_new_tokens``; ``logprobs`` holds the behaviour log-probability of each token
    (0.0 where the mask is 0). Text-only engines leave ``token_ids`` and ``loss_mask`` empty and fill
    ``logprobs`` with the server's per-token values when it gives them.
    """

    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    finish_reason: FinishReason = "stop"
    retokenized: bool = False  # the sampled ids were replaced by the canonical encoding of their text
    sampled_tokens: int = 0  # tokens the engine sampled for this turn (before any retokenization)


class Engine(ABC):
    """Samples the next assistant turn of each context in a batch.

    ``encoder`` is the policy's ``ChatEncoder`` for token-level engines and None for text-only ones;
    rollout keeps the episode's token ledger only when it is set.
    """

    encoder: "ChatEncoder | None" = None

    @abstractmethod
    def generate(self, contexts: list[Context], sampling: "SamplingConfig", *, seed: int | None = None) -> list[GeneratedTurn]:
        """Return one turn per context, in order. ``seed`` makes the sampling reproducible where the backend allows."""

    def close(self) -> None:
        """Release what the engine holds (connections, GPU memory). Safe to call twice."""


def first_of_each(keys: Sequence[Any]) -> tuple[list[int], list[int]]:
    """The first index of each distinct key, and for every position the place of its key among those.

    >>> first_of_each(["a", "b", "a", "c", "b"])
    ([0, 1, 3], [0, 1, 0, 2, 1])
    """
    first: dict[Any, int] = {}
    firsts: list[int] = []
    place = []
    for i, key in enumerate(keys):
        if key not in first:
            first[key] = len(firsts)
            firsts.append(i)
        place.append(first[key])
    return firsts, place


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run the coroutine ``make()`` to completion from synchronous code, also inside a running event loop.

    Rollout and the HTTP engine call this; in a notebook (where a loop already runs) the coroutine gets
    its own loop in a worker thread instead of failing.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()
