"""The LLM judge against a fake OpenAI-compatible server on 127.0.0.1."""

import pytest

from mmsearch_r1.eval.config import JudgeConfig
from mmsearch_r1.eval.judge import JUDGE_PROMPT, JudgeError, JudgeItem, LLMJudge, parse_verdict, render_prompt
from mmsearch_r1.protocol import REFUSAL

from loopback import ChatServer, completion


def FakeJudgeServer(*, fail_first: int = 0, status: int = 200, reply: str | None = None) -> ChatServer:
    """Answers CORRECT when a gold answer appears in the predicted answer (lower-cased)."""
    failures = [fail_first]

    def judge(body):
        if failures[0] > 0:
            failures[0] -= 1
            return 503, {"error": "busy"}
        if status != 200:
            return status, {"error": "nope"}
        prompt = body["messages"][0]["content"]
        gold = prompt.split("Gold answers: ")[1].split("\n")[0].lower()
        predicted = prompt.split("Predicted answer: ")[1].split("\n")[0].lower()
        verdict = reply if reply is not None else ("CORRECT" if any(g.strip() in predicted for g in gold.split("|")) else "INCORRECT")
        return 200, completion(verdict)

    return ChatServer(judge)


def _cfg(url, **kw):
    return JudgeConfig(base_url=url, model="fake-judge", api_key_env="MMSEARCH_TEST_JUDGE_KEY", timeout_s=5, max_retries=2, **kw)


def test_verdicts_are_parsed_and_cached_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("MMSEARCH_TEST_JUDGE_KEY", "sk-test-secret")
    items = [JudgeItem("Which city?", ["Paris"], "paris, france"), JudgeItem("Which city?", ["Paris"], "Lyon"),
             JudgeItem("Which city?", ["Paris"], None), JudgeItem("Which city?", ["Paris"], REFUSAL)]
    with FakeJudgeServer() as server:
        judge = LLMJudge(_cfg(server.url), tmp_path / "cache")
        assert judge.judge_many(items) == [True, False, False, False]
        assert len(server.requests) == 2  # no call for a missing answer or the refusal
        assert set(server.paths) == {"/v1/chat/completions"}
        assert server.requests[0]["model"] == "fake-judge" and server.requests[0]["temperature"] == 0.0
        assert server.headers[0]["Authorization"] == "Bearer sk-test-secret"
        judge.close()
        again = LLMJudge(_cfg(server.url), tmp_path / "cache")
        assert again.judge_many(items) == [True, False, False, False]
        assert len(server.requests) == 2  # every verdict came from the cache
        again.close()


def test_retries_after_server_errors_then_succeeds(tmp_path):
    with FakeJudgeServer(fail_first=2) as server:
        judge = LLMJudge(_cfg(server.url), tmp_path / "c")
        assert judge.judge(JudgeItem("q", ["Rex"], "Rex")) is True
        assert len(server.requests) == 3
        judge.close()


def test_unusable_replies_and_unreachable_servers_raise_one_clear_error(tmp_path):
    with FakeJudgeServer(reply="I think so") as server:
        judge = LLMJudge(_cfg(server.url), tmp_path / "a")
        with pytest.raises(JudgeError, match="neither CORRECT nor INCORRECT"):
            judge.judge(JudgeItem("q", ["x"], "x"))
        judge.close()
    with FakeJudgeServer(status=401) as server:
        judge = LLMJudge(_cfg(server.url), tmp_path / "b")
        with pytest.raises(JudgeError, match="HTTP 401") as info:
            judge.judge(JudgeItem("q", ["x"], "x"))
        assert "sk-" not in str(info.value)
        judge.close()
    with FakeJudgeServer() as server:
        url = server.url
    judge = LLMJudge(_cfg(url, ).model_copy(update={"max_retries": 0}), tmp_path / "d")
    with pytest.raises(JudgeError, match="failed after 1 tries"):
        judge.judge(JudgeItem("q", ["x"], "x"))
    judge.close()


def test_prompt_rendering_and_verdict_parsing():
    prompt = render_prompt(JUDGE_PROMPT, JudgeItem(" Who? ", ["Ada Lovelace", "Ada"], " Lovelace "))
    assert "Question: Who?\n" in prompt and "Gold answers: Ada Lovelace | Ada\n" in prompt and "Predicted answer: Lovelace\n" in prompt
    assert parse_verdict("INCORRECT") is False and parse_verdict("**Correct**") is True and parse_verdict("") is None


def test_custom_prompt_file_must_hold_the_fields(tmp_path):
    bad = tmp_path / "prompt.txt"
    bad.write_text("Grade {prediction} please")
    with pytest.raises(JudgeError, match=r"lacks the field \{question\}"):
        LLMJudge(_cfg("http://127.0.0.1:9/v1", prompt_file=bad), tmp_path / "e")


def test_check_asks_the_server_every_time_and_fails_fast_on_a_bad_one(tmp_path):
    with FakeJudgeServer() as server:
        judge = LLMJudge(_cfg(server.url), tmp_path / "cache")
        judge.check()
        judge.check()
        assert len(server.requests) == 2  # never from the cache: a key that expired since must still stop the run
    with FakeJudgeServer(status=401) as server:
        with pytest.raises(JudgeError, match="HTTP 401"):
            LLMJudge(_cfg(server.url), tmp_path / "other").check()
