"""The OpenAI-compatible engine against a fake chat-completions server on 127.0.0.1."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from mmsearch_r1.config import ProtocolConfig
from mmsearch_r1.data import VQASample
from mmsearch_r1.engines.base import Context, EngineError
from mmsearch_r1.engines.config import OpenAIEngineConfig, SamplingConfig
from mmsearch_r1.engines.openai import OpenAIEngine
from mmsearch_r1.rollout import rollout
from mmsearch_r1.tools.base import ImageHit, ImageSearch, TextSearch, Toolbox
from mmsearch_r1.trajectory import ImageRef, Message

from loopback import ChatServer, completion

IMAGE = "<reason>Unknown.</reason><search><img></search>"
ANSWER = "<reason>The pages say Quux.</reason><answer>Quux</answer>"


@pytest.fixture
def server():
    fake = ChatServer()
    yield fake
    fake.close()


def _engine(server, **kwargs):
    kwargs.setdefault("model_name", "tiny")
    kwargs.setdefault("backoff_s", 0.0)
    return OpenAIEngine(OpenAIEngineConfig(base_url=server.url, **kwargs))


def _context(color="red", question="What is it?"):
    return Context([Message("system", ["Be brief."]), Message("user", [ImageRef(0), question])], [Image.new("RGB", (12, 10), color)])


def test_images_go_as_png_data_urls_and_sampling_is_sent(server):
    turns = _engine(server).generate([_context("red"), _context("blue")], SamplingConfig(temperature=0.5, top_p=0.8, max_new_tokens=33), seed=7)
    assert [t.text for t in turns] == ["<reason>ok</reason><answer>x</answer>"] * 2
    assert all(t.token_ids == [] and t.finish_reason == "stop" for t in turns)
    bodies = sorted(server.requests, key=lambda b: b["seed"])
    assert [b["seed"] for b in bodies] == [7, 8]
    body = bodies[1]
    assert (body["model"], body["temperature"], body["top_p"], body["max_tokens"]) == ("tiny", 0.5, 0.8, 33)
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    image_part, text_part = body["messages"][1]["content"]
    assert text_part == {"type": "text", "text": "What is it?"}
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.size == (12, 10) and decoded.convert("RGB").getpixel((0, 0)) == (0, 0, 255)


def test_logprobs_and_length_finish_are_read_when_the_server_gives_them(server):
    server.reply = lambda body: (200, completion("<reason>r", "length", [-0.5, -1.25]))
    [turn] = _engine(server, logprobs=True).generate([_context()], SamplingConfig())
    assert server.requests[0]["logprobs"] is True
    assert (turn.logprobs, turn.finish_reason) == ([-0.5, -1.25], "length")


def test_rate_limits_and_server_errors_are_retried(server):
    statuses = iter([429, 503, 200])
    server.reply = lambda body: (next(statuses), completion("<reason>r</reason><answer>y</answer>"))
    [turn] = _engine(server, max_retries=3).generate([_context()], SamplingConfig())
    assert turn.text.endswith("<answer>y</answer>") and len(server.requests) == 3


def test_persistent_failure_is_one_clear_error(server):
    server.reply = lambda body: (500, {"error": "boom"})
    with pytest.raises(EngineError, match=r"failed 3 times \(HTTP 500\).*--base-url"):
        _engine(server, max_retries=2).generate([_context()], SamplingConfig())
    assert len(server.requests) == 3


def test_unreachable_server_names_the_url():
    closed = ChatServer()
    url = closed.url
    closed.close()
    engine = OpenAIEngine(OpenAIEngineConfig(base_url=url, model_name="m", max_retries=1, backoff_s=0.0))
    with pytest.raises(EngineError, match="127.0.0.1.*cannot connect"):
        engine.generate([_context()], SamplingConfig())


def test_concurrency_limit_is_respected(server):
    server.delay = 0.15
    _engine(server, max_concurrency=2).generate([_context() for _ in range(6)], SamplingConfig())
    assert len(server.requests) == 6 and server.most_in_flight == 2


def test_api_key_comes_from_the_environment_and_stays_out_of_errors(server, monkeypatch):
    monkeypatch.setenv("MY_SERVER_KEY", "sk-secret-123")
    server.reply = lambda body: (401, {"error": "bad key"})
    with pytest.raises(EngineError) as caught:
        _engine(server, api_key_env="MY_SERVER_KEY").generate([_context()], SamplingConfig())
    assert server.headers[0]["Authorization"] == "Bearer sk-secret-123"
    assert "$MY_SERVER_KEY" in str(caught.value) and "sk-secret" not in str(caught.value)


def test_model_name_is_asked_from_the_server_when_not_given(server):
    _engine(server, model_name="").generate([_context()], SamplingConfig())
    assert server.requests[0]["model"] == "tiny-served"


def test_malformed_reply_is_an_engine_error(server):
    server.reply = lambda body: (200, {"unexpected": True})
    with pytest.raises(EngineError, match="choices"):
        _engine(server).generate([_context()], SamplingConfig())


def test_a_whole_rollout_through_the_server(server):
    class Images(ImageSearch):
        def search(self, image, k=5):
            return [ImageHit(Image.new("RGB", (8, 8), "green"), "The Quux tower", "http://w/quux")]

    class Texts(TextSearch):
        def search(self, query, k=5):
            return []

    def reply(body):
        searched = any(m["role"] == "assistant" for m in body["messages"])
        return 200, completion(ANSWER if searched else IMAGE, logprobs=[-0.1])

    server.reply = reply
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), "red").save(buffer, format="PNG")
    samples = [VQASample("q1", "Where is it?", buffer.getvalue(), ["Quux"])]
    engine = _engine(server, logprobs=True)
    [t] = rollout(samples, engine, Toolbox(Images(), Texts()), protocol=ProtocolConfig(), sampling=SamplingConfig())
    assert (t.actions, t.end_reason, t.final_answer, t.image_searches) == (["image_search", "answer"], "answer", "Quux", 1)
    assert t.meta["turn_logprobs"] == [[-0.1], [-0.1]] and t.token_ids == []
    second = server.requests[1]["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert sum(p["type"] == "image_url" for p in second[3]["content"]) == 1  # the thumbnail


def test_generate_works_inside_a_running_event_loop(server):
    import asyncio

    async def inside():
        return _engine(server).generate([_context()], SamplingConfig())

    assert asyncio.run(inside())[0].text.endswith("</answer>")
