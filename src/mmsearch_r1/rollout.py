"""Multi-turn rollout: run a batch of episodes to completion under the search protocol and its limits.

Each turn, every live episode is sampled in one engine call; the turn's actions are parsed
(``protocol.parse_turn``) and judged against the limits (``protocol.decide``); the searches they ask for
run concurrently (``ImageSearch.asearch`` / ``TextSearch.asearch``); their results, or one sentence per
failed call, come back as the next user turn; finished episodes drop out. With a token-level engine
(Hugging Face, vLLM) each episode keeps its token ledger span by span: ``token_ids``, ``loss_mask`` (1 on
sampled tokens, each turn's sampled end-of-turn token included; 0 on one added after a turn cut at
``max_new_tokens``) and behaviour ``logprobs``.

Workflows (the paper's three):

- ``on_demand``: the policy decides, turn by turn, within ``ProtocolConfig``'s limits.
- ``direct``: a prompt that offers no tools and one turn; a search call ends the episode (``limit``).
- ``rag``: the environment runs image search before the first turn (no model turn), the policy writes a
  text-search query, the environment runs it, the policy answers: always exactly two searches. A first
  turn that is not a text search ends the episode (an answer there is ``invalid``, another image search
  is ``limit``).

>>> from mmsearch_r1.config import ProtocolConfig
>>> from mmsearch_r1.engines.config import SamplingConfig
>>> from mmsearch_r1.engines.scripted import ScriptedEngine
>>> from mmsearch_r1.data import VQASample
>>> sample = VQASample("q1", "What is it?", _blank_png(), ["Rex"])
>>> engine = ScriptedEngine(lambda context: "<reason>I know it.</reason><answer>Rex</answer>")
>>> [t] = rollout([sample], engine, None, protocol=ProtocolConfig(), sampling=SamplingConfig())
>>> t.actions, t.end_reason, t.final_answer
(['answer'], 'answer', 'Rex')
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Sequence

from mmsearch_r1.engines.base import Context, Engine, GeneratedTurn, TokenizedContext, first_of_each, run_async
from mmsearch_r1.errors import ConfigError, ToolError
from mmsearch_r1.progress import progress_bar
from mmsearch_r1.protocol import (
    Answer,
    ImageSearchCall,
    SearchBudget,
    Templates,
    TextSearchCall,
    Workflow,
    WORKFLOWS,
    decide,
    first_turn,
    image_results_turn,
    parse_turn,
    text_results_turn,
    tool_error_turn,
)
from mmsearch_r1.trajectory import ImageRef, Message, Trajectory

if TYPE_CHECKING:
    from PIL import Image

    from mmsearch_r1.config import ProtocolConfig
    from mmsearch_r1.data import VQASample
    from mmsearch_r1.engines.chat import EncodedSpan
    from mmsearch_r1.engines.config import SamplingConfig
    from mmsearch_r1.tools.base import ImageHit, TextHit, Toolbox

# --- one episode ----------------------------------------------------------------------------------


@dataclass
class Episode:
    """The state of one running episode; ``to_trajectory`` turns it into the record every stage reads."""

    sample: "VQASample"
    group_id: str
    index_in_group: int
    messages: list[Message] = field(default_factory=list)
    images: list["Image.Image"] = field(default_factory=list)
    tokens: TokenizedContext | None = None  # the token ledger; None with a text-only engine
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    budget: SearchBudget = field(default_factory=SearchBudget)
    actions: list[str] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    turn_logprobs: list[list[float]] = field(default_factory=list)  # text-only engines: the server's values
    end_reason: str | None = None
    final_answer: str | None = None
    tool_failures: int = 0
    retokenized_turns: int = 0
    sampled_tokens: int = 0

    @property
    def done(self) -> bool:
        return self.end_reason is not None

    def context(self) -> Context:
        return Context(self.messages, self.images, self.tokens)

    def add_given(self, added: list[Message], new_images: Sequence["Image.Image"], span: "EncodedSpan | None") -> None:
        """Append messages the environment gives (prompt, feedback) and their tokens (``span``), all masked out."""
        if span is not None:
            if self.tokens is None:
                self.tokens = TokenizedContext([])
            self.tokens.token_ids.extend(span.token_ids)
            self.tokens.pixel_values.extend(span.pixel_values)
            self.tokens.image_grid_thw.extend(span.image_grid_thw)
            self.loss_mask.extend([0] * len(span.token_ids))
            self.logprobs.extend([0.0] * len(span.token_ids))
        self.messages.extend(added)
        self.images.extend(new_images)

    def add_turn(self, turn: GeneratedTurn) -> None:
        """Append a sampled assistant turn and its tokens."""
        self.messages.append(Message("assistant", [turn.text]))
        self.finish_reasons.append(turn.finish_reason)
        self.retokenized_turns += int(turn.retokenized)
        self.sampled_tokens += turn.sampled_tokens
        if self.tokens is not None:
            self.tokens.token_ids.extend(turn.token_ids)
            self.loss_mask.extend(turn.loss_mask)
            self.logprobs.extend(turn.logprobs)
        else:
            self.turn_logprobs.append(list(turn.logprobs))

    def to_trajectory(self, workflow: str) -> Trajectory:
        sample = self.sample
        meta = {
            "workflow": workflow, "index_in_group": self.index_in_group, "data_source": sample.data_source,
            "category": sample.category, "search_need": sample.search_need, "finish_reasons": self.finish_reasons,
            "retokenized_turns": self.retokenized_turns, "sampled_tokens": self.sampled_tokens,
        }
        if self.tokens is None:
            meta["turn_logprobs"] = self.turn_logprobs
        return Trajectory(
            sample_id=sample.id, group_id=self.group_id, messages=self.messages,
            token_ids=list(self.tokens.token_ids) if self.tokens else [], loss_mask=self.loss_mask, logprobs=self.logprobs,
            images=self.images, actions=self.actions, end_reason=self.end_reason or "limit",
            image_searches=self.budget.image_searches, text_searches=self.budget.text_searches,
            tool_failures=self.tool_failures, final_answer=self.final_answer, gold_answers=list(sample.answers), meta=meta,
        )


def give(engine: Engine, episodes: Sequence[Episode], added: Sequence[list[Message]], new_images: Sequence[Sequence["Image.Image"]]) -> None:
    """Append given messages to several episodes, encoding all their spans in one processor call."""
    spans: list = [None] * len(episodes)
    if engine.encoder is not None and episodes:
        texts = [engine.encoder.given_text(e.messages, a) for e, a in zip(episodes, added)]
        spans = engine.encoder.encode_texts(texts, new_images)
    for episode, messages, images, span in zip(episodes, added, new_images, spans):
        episode.add_given(messages, images, span)


# --- workflows ------------------------------------------------------------------------------------


def workflow_limits(workflow: str, protocol: "ProtocolConfig") -> dict[str, int]:
    """The limits ``protocol.decide`` applies in each workflow (``rag`` counts its opening image search)."""
    if workflow == "on_demand":
        return {"max_turns": protocol.max_turns, "max_image_searches": protocol.max_image_searches, "max_text_searches": protocol.max_text_searches}
    if workflow == "direct":
        return {"max_turns": 1, "max_image_searches": 0, "max_text_searches": 0}
    if workflow == "rag":
        return {"max_turns": 2, "max_image_searches": 1, "max_text_searches": 1}
    raise ConfigError(f"workflow `{workflow}` is unknown; use one of {', '.join(WORKFLOWS)}.")


def _opening(episode: Episode, workflow: str, templates: Templates, image_result: "list[ImageHit] | ToolError | None") -> tuple[list[Message], list["Image.Image"]]:
    """The first messages and images of an episode in ``workflow`` (rag: with the image results already in)."""
    sample = episode.sample
    if workflow == "on_demand":
        return first_turn(sample.question, templates), [sample.image]
    if workflow == "direct":
        return first_turn(sample.question, replace(templates, user_prompt=templates.direct_prompt)), [sample.image]
    messages = first_turn(sample.question, replace(templates, user_prompt=""))
    if isinstance(image_result, ToolError):
        error = str(image_result) or type(image_result).__name__
        results, thumbnails = tool_error_turn("image_search", error, sample.question, replace(templates, tool_error=templates.rag_error))
    else:
        results, thumbnails = image_results_turn(image_result, sample.question, 1, replace(templates, image_results=templates.rag_query))
    messages[-1] = Message("user", [ImageRef(0), *results.content])
    return messages, [sample.image, *thumbnails]


def _judge(action, episode: Episode, workflow: str, limits: dict[str, int]) -> str | None:
    """Why the episode ends after ``action`` (answer | invalid | limit), or None when its search should run."""
    if workflow == "rag" and episode.budget.turns == 1 and isinstance(action, Answer):
        return "invalid"  # rag's first turn must write the text-search query
    return decide(action, episode.budget, **limits)


# --- tools ----------------------------------------------------------------------------------------


@dataclass
class _SearchCall:
    episode: Episode
    action: ImageSearchCall | TextSearchCall


async def _search(call: _SearchCall, toolbox: "Toolbox | None", protocol: "ProtocolConfig") -> "list[ImageHit] | list[TextHit] | ToolError":
    """Run one search; a ``ToolError`` is returned (to become a feedback turn), any other error propagates."""
    try:
        if isinstance(call.action, ImageSearchCall):
            if toolbox is None or toolbox.image is None:
                raise ToolError("no image-search tool is configured")
            return await toolbox.image.asearch(call.episode.sample.image, protocol.image_top_k)
        if toolbox is None or toolbox.text is None:
            raise ToolError("no text-search tool is configured")
        return await toolbox.text.asearch(call.action.query, protocol.text_top_k)
    except ToolError as error:
        return error


def _call_key(call: _SearchCall) -> tuple:
    """What makes two calls of one turn the same search: the same sample's image, or the same query."""
    if isinstance(call.action, ImageSearchCall):
        return ("image", id(call.episode.sample))  # the episodes of one sample search its one decoded image
    return ("text", call.action.query)


def run_searches(calls: list[_SearchCall], toolbox: "Toolbox | None", protocol: "ProtocolConfig") -> list:
    """All of a turn's tool calls, concurrently; results in the order of ``calls``.

    Identical calls of the turn (a GRPO group searching its image, two episodes writing the same query) run
    once and share the result, so a paid backend is charged once and a local one does the work once.
    """
    if not calls:
        return []
    firsts, place = first_of_each([_call_key(call) for call in calls])

    async def gather() -> list:
        return await asyncio.gather(*(_search(calls[i], toolbox, protocol) for i in firsts))

    results = run_async(gather)
    return [results[p] for p in place]


def _feedback(call: _SearchCall, result, templates: Templates) -> tuple[Message, list["Image.Image"]]:
    episode, question = call.episode, call.episode.sample.question
    tool = call.action.kind
    if isinstance(result, ToolError):
        return tool_error_turn(tool, str(result) or type(result).__name__, question, templates)
    if tool == "image_search":
        return image_results_turn(result, question, len(episode.images), templates)
    return text_results_turn(result, question, templates)


# --- the loop -------------------------------------------------------------------------------------


def turn_seed(seed: int, turn: int) -> int:
    """The engine seed of one turn of a rollout: distinct per turn, fixed by the rollout seed.

    >>> turn_seed(0, 1), turn_seed(1, 1)
    (1, 1000004)
    """
    return (seed * 1_000_003 + turn) % (2**63)


def rollout(
    samples: Sequence["VQASample"],
    engine: Engine,
    toolbox: "Toolbox | None",
    *,
    n: int = 1,
    protocol: "ProtocolConfig",
    sampling: "SamplingConfig",
    seed: int = 0,
    workflow: Workflow = "on_demand",
    templates: Templates | None = None,
    progress: bool = False,
) -> list[Trajectory]:
    """Run ``n`` episodes per sample to completion; return their trajectories (sample-major, then group order).

    One engine call per turn serves all live episodes; the turn's searches run concurrently; an episode
    ends on an answer, an invalid turn, or a search its limits forbid (``protocol.decide``).
    """
    limits = workflow_limits(workflow, protocol)
    if n < 1:
        raise ConfigError(f"n (episodes per sample) must be at least 1, not {n}.")
    templates = templates or Templates.load(protocol.template_dir)
    episodes = [Episode(sample, f"{sample.id}@{i}", j) for i, sample in enumerate(samples) for j in range(n)]

    # --- opening turn (rag: the environment's image search comes first) ---
    image_results = [None] * len(episodes)
    if workflow == "rag":
        calls = [_SearchCall(e, ImageSearchCall()) for e in episodes]
        image_results = run_searches(calls, toolbox, protocol)
    openings = [_opening(e, workflow, templates, result) for e, result in zip(episodes, image_results)]
    give(engine, episodes, [messages for messages, _ in openings], [images for _, images in openings])
    if workflow == "rag":
        for episode, result in zip(episodes, image_results):
            episode.budget.image_searches = 1
            episode.tool_failures += int(isinstance(result, ToolError))

    with progress_bar("rollout", len(episodes), enabled=progress) as advance:
        for turn in range(1, limits["max_turns"] + 1):
            live = [e for e in episodes if not e.done]
            if not live:
                break
            generated = engine.generate([e.context() for e in live], sampling, seed=turn_seed(seed, turn))
            calls = []
            for episode, out in zip(live, generated):
                episode.add_turn(out)
                episode.budget.turns += 1
                action = parse_turn(out.text)
                episode.actions.append(action.kind)
                episode.end_reason = _judge(action, episode, workflow, limits)
                if isinstance(action, Answer) and episode.end_reason == "answer":
                    episode.final_answer = action.text
                elif episode.end_reason is None:
                    calls.append(_SearchCall(episode, action))
            feedback = []
            for call, result in zip(calls, run_searches(calls, toolbox, protocol)):
                if isinstance(call.action, ImageSearchCall):
                    call.episode.budget.image_searches += 1
                else:
                    call.episode.budget.text_searches += 1
                call.episode.tool_failures += int(isinstance(result, ToolError))
                feedback.append(_feedback(call, result, templates))
            give(engine, [c.episode for c in calls], [[message] for message, _ in feedback], [images for _, images in feedback])
            advance(sum(e.done for e in live))
    return [e.to_trajectory(workflow) for e in episodes]


def _blank_png() -> bytes:
    """A tiny PNG for doctests."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(buffer, format="PNG")
    return buffer.getvalue()
