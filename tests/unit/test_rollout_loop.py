"""The rollout loop against a scripted engine and fake tools: limits, invalid turns, tool failures, workflows."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from mmsearch_r1.config import ProtocolConfig
from mmsearch_r1.data import VQASample
from mmsearch_r1.engines.config import SamplingConfig
from mmsearch_r1.engines.scripted import ScriptedEngine
from mmsearch_r1.errors import ConfigError, ToolRateLimited, ToolTimeout
from mmsearch_r1.rollout import rollout
from mmsearch_r1.tools.base import ImageHit, ImageSearch, TextHit, TextSearch, Toolbox
from mmsearch_r1.trajectory import ImageRef

ANSWER = "<reason>I know it.</reason><answer>Rex</answer>"
IMAGE = "<reason>Unknown.</reason><search><img></search>"
TEXT = "<reason>Look it up.</reason><text_search>Rex tower height</text_search>"
RAMBLE = "I am not sure what this is."


def _png(color: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buffer, format="PNG")
    return buffer.getvalue()


def _sample(i: int = 0) -> VQASample:
    return VQASample(f"q{i}", f"What is thing {i}?", _png("red"), ["Rex"], category="search_required")


class FakeImageSearch(ImageSearch):
    """Returns ``k`` coloured thumbnails; tracks how many calls were in flight at once."""

    def __init__(self, fail: Exception | None = None):
        self.fail, self.calls, self.in_flight, self.most_in_flight = fail, 0, 0, 0

    def search(self, image, k=5):  # pragma: no cover - rollout uses asearch
        raise AssertionError("rollout must call asearch")

    async def asearch(self, image, k=5):
        self.calls += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0.02)
        self.in_flight -= 1
        if self.fail is not None:
            raise self.fail
        return [ImageHit(Image.new("RGB", (8, 8), (40 * i, 0, 0)), f"Page {i} <b>", f"http://p/{i}") for i in range(k)]


class FakeTextSearch(TextSearch):
    def __init__(self, fail: Exception | None = None):
        self.fail, self.queries, self.in_flight, self.most_in_flight = fail, [], 0, 0

    def search(self, query, k=5):  # pragma: no cover
        raise AssertionError("rollout must call asearch")

    async def asearch(self, query, k=5):
        self.queries.append(query)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0.02)
        self.in_flight -= 1
        if self.fail is not None:
            raise self.fail
        return [TextHit(f"Doc {i}", f"http://d/{i}", f"Rex is {i} m tall.") for i in range(k)]


def script(*turns: str):
    """A reply function that plays ``turns`` in order, by the number of assistant turns so far."""

    def reply(context):
        done = sum(m.role == "assistant" for m in context.messages)
        return turns[min(done, len(turns) - 1)]

    return reply


def run(reply, toolbox=None, protocol=None, **kwargs):
    engine = ScriptedEngine(reply)
    toolbox = toolbox if toolbox is not None else Toolbox(FakeImageSearch(), FakeTextSearch())
    out = rollout([_sample()], engine, toolbox, protocol=protocol or ProtocolConfig(), sampling=SamplingConfig(), **kwargs)
    return out[0], engine, toolbox


# --- endings (test c) -------------------------------------------------------------------------------


def test_answer_ends_the_episode_at_once():
    t, engine, _ = run(script(ANSWER))
    assert (t.actions, t.end_reason, t.final_answer, t.searches) == (["answer"], "answer", "Rex", 0)
    assert engine.calls == 1 and [m.role for m in t.messages] == ["system", "user", "assistant"]


def test_full_image_then_text_then_answer_sequence():
    t, _, tools = run(script(IMAGE, TEXT, ANSWER))
    assert t.actions == ["image_search", "text_search", "answer"]
    assert (t.end_reason, t.image_searches, t.text_searches, t.tool_failures) == ("answer", 1, 1, 0)
    assert tools.text.queries == ["Rex tower height"]
    assert [m.role for m in t.messages] == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]


def test_invalid_turn_ends_the_episode_without_feedback():
    t, _, tools = run(script(RAMBLE, ANSWER))
    assert (t.actions, t.end_reason, t.final_answer) == (["invalid"], "invalid", None)
    assert t.messages[-1].role == "assistant" and tools.image.calls == 0


def test_second_image_search_is_beyond_the_limit():
    t, _, tools = run(script(IMAGE, IMAGE, ANSWER))
    assert (t.actions, t.end_reason, t.image_searches) == (["image_search", "image_search"], "limit", 1)
    assert tools.image.calls == 1 and t.messages[-1].role == "assistant"


def test_search_in_the_last_allowed_turn_ends_without_feedback():
    t, _, tools = run(script(TEXT, TEXT, TEXT))
    assert (t.actions, t.end_reason, t.text_searches) == (["text_search"] * 3, "limit", 2)
    assert len(tools.text.queries) == 2 and t.messages[-1].role == "assistant"


def test_configured_limits_are_respected():
    protocol = ProtocolConfig(max_turns=5, max_text_searches=3)
    t, _, tools = run(script(TEXT, TEXT, TEXT, TEXT, ANSWER), protocol=protocol)
    assert (t.end_reason, t.text_searches, len(tools.text.queries)) == ("limit", 3, 3)
    assert len(t.actions) == 4


def test_zero_image_searches_allowed_ends_on_the_first_image_call():
    t, _, tools = run(script(IMAGE, ANSWER), protocol=ProtocolConfig(max_image_searches=0))
    assert (t.end_reason, tools.image.calls) == ("limit", 0)


# --- tool failures (test d) -------------------------------------------------------------------------


def test_tool_failure_becomes_feedback_and_is_counted():
    toolbox = Toolbox(FakeImageSearch(fail=ToolTimeout("image backend timed out after 10 s")), FakeTextSearch())
    t, _, _ = run(script(IMAGE, ANSWER), toolbox=toolbox)
    assert (t.actions, t.end_reason, t.tool_failures, t.image_searches) == (["image_search", "answer"], "answer", 1, 1)
    feedback = t.messages[3]
    assert feedback.role == "user" and "image search failed" in feedback.text and "timed out after 10 s" in feedback.text
    assert len(t.images) == 1  # no thumbnails came back


def test_failures_of_both_tools_are_counted_and_the_episode_goes_on():
    toolbox = Toolbox(FakeImageSearch(fail=ToolRateLimited("429")), FakeTextSearch(fail=ToolTimeout("slow")))
    t, _, _ = run(script(IMAGE, TEXT, ANSWER), toolbox=toolbox)
    assert (t.tool_failures, t.end_reason, t.final_answer) == (2, "answer", "Rex")


def test_missing_tool_is_a_counted_failure():
    t, _, _ = run(script(TEXT, ANSWER), toolbox=Toolbox(FakeImageSearch(), None))
    assert (t.tool_failures, t.end_reason) == (1, "answer")
    assert "no text-search tool" in t.messages[3].text


def test_a_bug_in_a_tool_is_not_swallowed():
    with pytest.raises(ZeroDivisionError):
        run(script(IMAGE, ANSWER), toolbox=Toolbox(FakeImageSearch(fail=ZeroDivisionError()), FakeTextSearch()))


# --- images, records, batching ------------------------------------------------------------------------


def test_thumbnails_follow_the_question_image_in_context_order():
    t, _, _ = run(script(IMAGE, ANSWER), protocol=ProtocolConfig(image_top_k=3))
    assert len(t.images) == 4
    assert t.images[0].size == (16, 16) and [img.getpixel((0, 0))[0] for img in t.images[1:]] == [0, 40, 80]
    refs = [p.index for m in t.messages for p in m.content if isinstance(p, ImageRef)]
    assert refs == [0, 1, 2, 3]
    assert "&lt;b&gt;" in t.messages[3].text  # titles are escaped


def test_batch_runs_one_engine_call_per_turn_and_finished_episodes_drop_out():
    replies = {"q0": (ANSWER,), "q1": (IMAGE, ANSWER), "q2": (IMAGE, TEXT, ANSWER)}

    def reply(context):
        sample_id = "q" + context.messages[1].text.split("thing ")[1][0]
        turns = replies[sample_id]
        return turns[min(sum(m.role == "assistant" for m in context.messages), len(turns) - 1)]

    engine = ScriptedEngine(reply)
    tools = Toolbox(FakeImageSearch(), FakeTextSearch())
    out = rollout([_sample(i) for i in range(3)], engine, tools, n=2, protocol=ProtocolConfig(), sampling=SamplingConfig())
    assert engine.batch_sizes == [6, 4, 2]
    assert [t.sample_id for t in out] == ["q0", "q0", "q1", "q1", "q2", "q2"]
    assert [t.group_id for t in out] == ["q0@0", "q0@0", "q1@1", "q1@1", "q2@2", "q2@2"]
    assert [len(t.actions) for t in out] == [1, 1, 2, 2, 3, 3]
    assert (tools.image.calls, tools.image.most_in_flight) == (2, 2)  # one search per sample's image, both at once
    assert out[0].meta["category"] == "search_required" and out[0].gold_answers == ["Rex"]


def test_identical_calls_of_a_turn_run_once_and_every_episode_gets_the_results():
    def reply(context):
        done = sum(m.role == "assistant" for m in context.messages)
        if "thing 2" in context.messages[1].text:  # another sample, writing the same query in its first turn
            return (TEXT, ANSWER)[min(done, 1)]
        return (IMAGE, TEXT, ANSWER)[min(done, 2)]

    tools = Toolbox(FakeImageSearch(), FakeTextSearch())
    out = rollout([_sample(0), _sample(1), _sample(2)], ScriptedEngine(reply), tools, n=3, protocol=ProtocolConfig(image_top_k=2), sampling=SamplingConfig())
    assert tools.image.calls == 2  # turn 1: samples 0 and 1, three episodes each
    assert tools.text.queries == ["Rex tower height", "Rex tower height"]  # turn 1 (sample 2) and turn 2 (samples 0, 1)
    for t in out:
        assert t.end_reason == "answer" and t.text_searches == 1 and "Rex is 0 m tall." in t.messages[-2].text
    assert all(len(t.images) == 3 and t.image_searches == 1 for t in out[:6])
    assert all(len(t.images) == 1 and t.image_searches == 0 for t in out[6:])


def test_different_queries_of_a_turn_each_get_their_own_results():
    class EchoTextSearch(FakeTextSearch):
        async def asearch(self, query, k=5):
            self.queries.append(query)
            return [TextHit("Doc", "http://d/0", f"About {query}.")]

    def reply(context):
        if any(m.role == "assistant" for m in context.messages):
            return ANSWER
        thing = context.messages[1].text.split("thing ")[1][0]
        return f"<reason>Look it up.</reason><text_search>thing {thing}</text_search>"

    tools = Toolbox(FakeImageSearch(), EchoTextSearch())
    out = rollout([_sample(0), _sample(1)], ScriptedEngine(reply), tools, n=2, protocol=ProtocolConfig(), sampling=SamplingConfig())
    assert sorted(tools.text.queries) == ["thing 0", "thing 1"]
    assert [("About thing 0." in t.messages[-2].text, "About thing 1." in t.messages[-2].text) for t in out] == [(True, False)] * 2 + [(False, True)] * 2


def test_rag_searches_each_samples_image_once_and_counts_it_in_every_episode():
    tools = Toolbox(FakeImageSearch(), FakeTextSearch())
    out = rollout([_sample(0), _sample(1)], ScriptedEngine(script(TEXT, ANSWER)), tools, n=4, protocol=ProtocolConfig(), sampling=SamplingConfig(), workflow="rag")
    assert tools.image.calls == 2
    assert [(t.image_searches, t.tool_failures, t.end_reason) for t in out] == [(1, 0, "answer")] * 8
    failing = Toolbox(FakeImageSearch(fail=ToolTimeout("slow")), FakeTextSearch())
    out = rollout([_sample(0)], ScriptedEngine(script(TEXT, ANSWER)), failing, n=3, protocol=ProtocolConfig(), sampling=SamplingConfig(), workflow="rag")
    assert failing.image.calls == 1 and [(t.image_searches, t.tool_failures) for t in out] == [(1, 1)] * 3


def test_a_shared_failure_is_counted_in_every_episode_that_asked():
    tools = Toolbox(FakeImageSearch(fail=ToolTimeout("slow")), FakeTextSearch())
    out = rollout([_sample(0)], ScriptedEngine(script(IMAGE, ANSWER)), tools, n=4, protocol=ProtocolConfig(), sampling=SamplingConfig())
    assert tools.image.calls == 1 and [t.tool_failures for t in out] == [1, 1, 1, 1]


def test_text_only_engine_leaves_token_fields_empty_but_consistent():
    t, _, _ = run(script(ANSWER))
    assert t.token_ids == [] and t.loss_mask == [] and t.logprobs == []


# --- workflows ------------------------------------------------------------------------------------


def test_direct_workflow_offers_no_tools_and_one_turn():
    t, _, tools = run(script(IMAGE), workflow="direct")
    assert (t.end_reason, tools.image.calls) == ("limit", 0)
    assert "<search>" not in t.messages[1].text
    t, _, _ = run(script(ANSWER), workflow="direct")
    assert (t.end_reason, t.final_answer) == ("answer", "Rex")


def test_rag_workflow_always_runs_image_then_text_search():
    t, engine, tools = run(script(TEXT, ANSWER), workflow="rag", protocol=ProtocolConfig(image_top_k=2))
    assert (t.actions, t.end_reason, t.image_searches, t.text_searches) == (["text_search", "answer"], "answer", 1, 1)
    assert tools.image.calls == 1 and engine.calls == 2
    opening = t.messages[1]
    assert opening.role == "user" and "<information>" in opening.text and "<text_search>" in opening.text
    assert [p.index for p in opening.content if isinstance(p, ImageRef)] == [0, 1, 2] and len(t.images) == 3


def test_rag_first_turn_must_be_a_text_search():
    t, _, _ = run(script(ANSWER), workflow="rag")
    assert (t.end_reason, t.final_answer, t.image_searches) == ("invalid", None, 1)
    t, _, _ = run(script(IMAGE), workflow="rag")
    assert t.end_reason == "limit"


def test_rag_image_search_failure_is_counted():
    toolbox = Toolbox(FakeImageSearch(fail=ToolTimeout("down")), FakeTextSearch())
    t, _, _ = run(script(TEXT, ANSWER), toolbox=toolbox, workflow="rag")
    assert (t.tool_failures, t.end_reason, len(t.images)) == (1, "answer", 1)
    opening = t.messages[1].text
    assert "image search failed (down)" in opening and "write a web search query" in opening
    assert "look most like" not in opening  # no results to speak of: the rag_error template, not rag_query's


def test_unknown_workflow_and_bad_n_are_config_errors():
    with pytest.raises(ConfigError, match="workflow"):
        run(script(ANSWER), workflow="agentic")
    with pytest.raises(ConfigError, match="n "):
        run(script(ANSWER), n=0)


def test_rollout_works_inside_a_running_event_loop():
    async def inside():
        return run(script(IMAGE, ANSWER))[0]

    t = asyncio.run(inside())
    assert (t.actions, t.image_searches, t.end_reason) == (["image_search", "answer"], 1, "answer")
