"""Evaluation runs end to end with a scripted engine and in-memory tools: three workflows, metrics, resume."""

import io
import json
import re

import pytest
from PIL import Image

from mmsearch_r1.config import ProtocolConfig, RewardConfig
from mmsearch_r1.data.schema import VQASample
from mmsearch_r1.engines.config import SamplingConfig
from mmsearch_r1.engines.scripted import ScriptedEngine
from mmsearch_r1.errors import ToolError
from mmsearch_r1.eval.config import EvalConfig
from mmsearch_r1.eval.run import EvalData, evaluate, finished_ids, parse_workflows, trajectory_file
from mmsearch_r1.tools.base import ImageHit, ImageSearch, TextHit, TextSearch, Toolbox


def _png(k):
    buffer = io.BytesIO()
    Image.new("RGB", (28, 28), (40 * k % 255, 90, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def _samples(n=6):
    # gold is ans<k>, except every third question whose gold the script never says
    return [VQASample(f"s{k}", f"Q{k}: what is shown?", _png(k), [f"ans{k}" if k % 3 else "other"],
                      category="search_required" if k % 2 else "search_free", search_need="image" if k % 2 else "none")
            for k in range(n)]


def _reply(context):
    text = "\n".join(m.text for m in context.messages)
    last_user = [m for m in context.messages if m.role == "user"][-1].text
    k = int(re.search(r"Q(\d+)", text).group(1))
    if "write a web search query" in last_user:
        return f"<reason>look it up</reason><text_search>entity {k}</text_search>"
    if "to find pages with similar images" in last_user and k % 2 == 1:
        return "<reason>not sure</reason><search><img></search>"
    return f"<reason>ok</reason><answer>ans{k}</answer>"


class FakeImages(ImageSearch):
    def search(self, image, k=5):
        return [ImageHit(Image.new("RGB", (20, 20), (0, 200, 0)), f"Page {i}", f"https://example.org/{i}") for i in range(2)]


class FakeText(TextSearch):
    def search(self, query, k=5):
        if query.endswith(" 5"):
            raise ToolError("backend down")
        return [TextHit("A page", "https://example.org/a", f"About {query}.")]


def _run(out, engine, **cfg):
    eval_cfg = EvalConfig(bootstrap_samples=50, batch_size=cfg.pop("batch_size", 4), **cfg)
    return evaluate([EvalData("demo", _samples())], engine, Toolbox(FakeImages(), FakeText()), out_dir=out, eval_cfg=eval_cfg,
                    protocol=ProtocolConfig(), sampling=SamplingConfig(max_new_tokens=32), reward_cfg=RewardConfig(), seed=0)


def _without_latency(data):
    """The results without wall-clock figures, which differ from run to run."""
    if isinstance(data, dict):
        return {k: _without_latency(v) for k, v in data.items() if not k.startswith("latency")}
    return data


def test_three_workflows_give_the_hand_computed_metrics(tmp_path):
    result = _run(tmp_path, ScriptedEngine(_reply), match="em")
    data = json.loads((tmp_path / "results.json").read_text())["datasets"]["demo"]
    assert set(data) == {"direct", "rag", "on_demand"}
    direct, rag, on_demand = data["direct"], data["rag"], data["on_demand"]
    assert direct["n"] == rag["n"] == on_demand["n"] == 6
    assert direct["accuracy"] == pytest.approx(4 / 6) and direct["search_ratio"] == 0.0
    assert rag["search_ratio"] == 1.0 and rag["both_search_ratio"] == 1.0 and rag["searches_per_question"] == 2.0
    assert rag["accuracy"] == pytest.approx(4 / 6) and rag["tool_failures"] == 1  # the text search for Q5 failed
    assert on_demand["search_ratio"] == pytest.approx(3 / 6) and on_demand["image_search_ratio"] == pytest.approx(3 / 6)
    assert on_demand["text_search_ratio"] == 0.0 and on_demand["correct_without_search"] == pytest.approx(2 / 6)
    free = on_demand["per_label"]["category"]["search_free"]
    assert free["n"] == 3 and free["search_ratio"] == 0.0 and free["accuracy"] == pytest.approx(2 / 3)
    assert on_demand["latency_mean_s"] is not None and on_demand["latency_mean_s"] >= 0
    for name in ("results.md", "accuracy_vs_search_ratio.png", "per_label.png", "viewer.html"):
        assert (tmp_path / name).is_file()
    viewer = (tmp_path / "viewer.html").read_text()
    assert viewer.count('<article class="traj"') == 18 and "Page 1" in viewer and "About entity 1." in viewer
    assert result.ran == 18


def test_interrupted_run_resumes_without_redoing_finished_samples(tmp_path):
    reference = tmp_path / "ref"
    _run(reference, ScriptedEngine(_reply), match="subem", workflows=["on_demand"])

    class Interrupt(Exception):
        pass

    def dies_after(contexts_left):
        left = {"n": contexts_left}

        def reply(context):
            left["n"] -= 1
            if left["n"] < 0:
                raise Interrupt
            return _reply(context)

        return ScriptedEngine(reply)

    # batch 1 (s0..s3) needs 4 contexts in turn 1 and 2 in turn 2 (s1 and s3 searched)
    out = tmp_path / "run"
    path = trajectory_file(out, "demo", "on_demand")
    with pytest.raises(Interrupt):
        _run(out, dies_after(5), match="subem", workflows=["on_demand"])
    assert finished_ids(path) == set()  # the first batch died in its second turn: nothing saved
    with pytest.raises(Interrupt):
        _run(out, dies_after(6), match="subem", workflows=["on_demand"])
    assert finished_ids(path) == {"s0", "s1", "s2", "s3"}  # batch 1 saved, batch 2 died
    with path.open("a") as handle:  # a line torn by the crash
        handle.write('{"sample_id": "s4", "mess')

    counting = ScriptedEngine(_reply)
    result = _run(out, counting, match="subem", workflows=["on_demand"])
    assert result.ran == 2 and sum(counting.batch_sizes) == 3  # s4 (1 turn) and s5 (2 turns) only
    assert finished_ids(path) == {f"s{k}" for k in range(6)}
    assert len(path.read_text().splitlines()) == 6
    assert _without_latency(json.loads((out / "results.json").read_text())) == _without_latency(json.loads((reference / "results.json").read_text()))
    again = ScriptedEngine(_reply)
    assert _run(out, again, match="subem", workflows=["on_demand"]).ran == 0 and again.calls == 0


def test_parse_workflows_rejects_unknown_names():
    assert parse_workflows("on-demand,direct") == ["on_demand", "direct"]
    with pytest.raises(Exception, match="workflow `search-always` is unknown; use direct, rag or on-demand"):
        parse_workflows("search-always")


def test_limit_cuts_each_dataset(tmp_path):
    result = _run(tmp_path, ScriptedEngine(_reply), match="em", workflows=["direct"], limit=4)
    assert result.ran == 4 and result.table["demo"]["direct"].n == 4
    assert result.table["demo"]["direct"].accuracy == pytest.approx(2 / 4)  # s1, s2 right; s0, s3 gold "other"
