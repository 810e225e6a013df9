"""`mmsearch-r1 eval` end to end: a tiny random Qwen2.5-VL on a small demo world, all three workflows, real
local tools, then a resumed run that redoes nothing.

The model is untrained, so accuracy is not the point; the test checks the plumbing against the trajectories
on disk: counts, search ratios that follow each workflow's rules, the reports, and resuming.
"""

import json
import sys

import pytest

from mmsearch_r1.cli import main

from loopback import ChatServer, completion, last_user_text

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def world_and_policy(tmp_path_factory):
    from mmsearch_r1.models import ModelConfig, build_tiny_policy, build_tokenizer
    from mmsearch_r1.world.build import build_world

    root = tmp_path_factory.mktemp("demo")
    world = build_world(root / "world", seed=0, size="small")
    texts = [json.loads(line)["text"] for line in (world / "pages.jsonl").read_text().splitlines()[:200]]
    cfg = ModelConfig(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2,
                      vision_hidden_size=32, vision_heads=2, vision_intermediate_size=64)
    policy = build_tiny_policy(cfg, build_tokenizer(texts, vocab_size=600), seed=0)
    return world, policy.save(root / "policy")


def _eval(monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["mmsearch-r1", "eval", *map(str, args)])
    main()


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_three_workflows_on_the_demo_world_then_resume(world_and_policy, tmp_path, monkeypatch):
    world, policy = world_and_policy
    out = tmp_path / "eval"
    args = ["--model", policy, "--data", world / "test.parquet", world / "heldout.parquet", "--limit", 3, "--out", out,
            "--set", "engine.sampling.max_new_tokens=12", "--set", "eval.bootstrap_samples=50", "--set", "eval.batch_size=3"]
    _eval(monkeypatch, *args)
    results = json.loads((out / "results.json").read_text())["datasets"]
    assert set(results) == {"test", "heldout", "all"}
    for name in ("test", "heldout"):
        for workflow in ("direct", "rag", "on_demand"):
            metrics = results[name][workflow]
            lines = _lines(out / "trajectories" / f"{name}.{workflow}.jsonl")
            assert metrics["n"] == len(lines) == 3
            searched = sum(t["image_searches"] + t["text_searches"] > 0 for t in lines) / 3
            assert metrics["search_ratio"] == pytest.approx(searched)
            assert all(t["meta"]["dataset"] == name and t["meta"]["question"] for t in lines)
        assert results[name]["direct"]["search_ratio"] == 0.0
        assert results[name]["rag"]["image_search_ratio"] == 1.0  # the environment's opening image search
        assert results[name]["rag"]["searches_per_question"] <= 2.0
        assert "search_need" in results[name]["on_demand"]["per_label"]
    for name in ("results.md", "accuracy_vs_search_ratio.png", "per_label.png", "viewer.html", "config.toml"):
        assert (out / name).is_file()
    assert (out / "viewer.html").read_text().count('<article class="traj"') == 18

    before = {p.name: p.read_text() for p in (out / "trajectories").glob("*.jsonl")}
    _eval(monkeypatch, *args)  # everything is done: nothing is generated again
    after = {p.name: p.read_text() for p in (out / "trajectories").glob("*.jsonl")}
    assert before == after


class FakeVLMServer(ChatServer):
    """An OpenAI-compatible chat server on 127.0.0.1 that plays a searcher: image search, text search, answer.

    It records how many images each request carried.
    """

    def __init__(self):
        self.images_per_request: list[int] = []
        super().__init__(self.search_then_answer)

    def search_then_answer(self, body):
        parts = [p for m in body["messages"] if isinstance(m["content"], list) for p in m["content"]]
        self.images_per_request.append(sum(p.get("type") == "image_url" and p["image_url"]["url"].startswith("data:image/") for p in parts))
        text = last_user_text(body)
        if "write a web search query" in text or "or search with <text_search>" in text:
            return 200, completion("<reason>The pages name the guild.</reason><text_search>guild founding decade</text_search>")
        if "to find pages with similar images" in text:
            return 200, completion("<reason>I do not know this emblem.</reason><search><img></search>")
        return 200, completion("<reason>The results say so.</reason><answer>twenties</answer>")


def test_an_openai_compatible_model_in_all_three_workflows_with_one_command(world_and_policy, tmp_path, monkeypatch):
    world, _ = world_and_policy
    out = tmp_path / "openai"
    with FakeVLMServer() as server:
        _eval(monkeypatch, "--engine", "openai", "--base-url", server.url, "--model", "fake-vlm", "--data", world / "test.parquet",
              "--limit", 4, "--out", out, "--set", "eval.bootstrap_samples=0")
    results = json.loads((out / "results.json").read_text())["datasets"]["test"]
    assert results["direct"]["search_ratio"] == 0.0 and results["direct"]["n"] == 4
    assert results["rag"]["searches_per_question"] == 2.0 and results["rag"]["both_search_ratio"] == 1.0
    assert results["on_demand"]["searches_per_question"] == 2.0 and results["on_demand"]["both_search_ratio"] == 1.0
    assert results["on_demand"]["tool_failures"] == 0
    # 4 direct + 8 rag + 12 on-demand requests; every one carried the question image, later ones the thumbnails too
    assert len(server.images_per_request) == 24 and min(server.images_per_request) >= 1 and max(server.images_per_request) > 1
    lines = _lines(out / "trajectories" / "test.on_demand.jsonl")
    assert all(t["actions"] == ["image_search", "text_search", "answer"] and t["final_answer"] == "twenties" for t in lines)
