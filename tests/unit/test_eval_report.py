"""Reports: results.json layout, the Markdown table, plots, and the viewer's escaping and filters markup."""

import json
import re

import pytest
from PIL import Image

from mmsearch_r1.eval.metrics import Outcome, breakdown
from mmsearch_r1.eval.report import markdown_table, plot_accuracy_vs_search_ratio, plot_per_label, results_json, write_results_json
from mmsearch_r1.eval.viewer import ViewerEntry, render_viewer
from mmsearch_r1.reward import RewardBreakdown
from mmsearch_r1.trajectory import ImageRef, Message, Trajectory

REQUIRED_KEYS = {"accuracy", "search_ratio", "image_search_ratio", "text_search_ratio", "searches_per_question", "correct_without_search", "n"}


def _table():
    outs = []
    for wf, correct, searches in (("direct", [1, 0, 0, 0], [0, 0, 0, 0]), ("rag", [1, 1, 0, 1], [2, 2, 2, 2]), ("on_demand", [1, 1, 0, 0], [0, 1, 2, 0])):
        for i, (c, s) in enumerate(zip(correct, searches)):
            for ds in ("fvqa", "infoseek"):
                outs.append(Outcome(f"{ds}{i}", bool(c), image_searches=min(s, 1), text_searches=max(s - 1, 0), dataset=ds, workflow=wf,
                                    category="search_free" if i == 0 else "search_required", search_need=("none", "image", "image_text", "text")[i]))
    return breakdown(outs, bootstrap_samples=100, seed=0)


def test_results_json_has_each_dataset_workflow_and_label_with_the_required_keys(tmp_path):
    path = write_results_json(_table(), tmp_path / "results.json", match="subem", extra={"workflows": ["direct", "rag", "on_demand"]})
    data = json.loads(path.read_text())
    assert data["match"] == "subem" and set(data["datasets"]) == {"fvqa", "infoseek", "all"}
    rag = data["datasets"]["fvqa"]["rag"]
    assert REQUIRED_KEYS <= set(rag)
    assert rag["accuracy"] == pytest.approx(0.75) and rag["search_ratio"] == 1.0 and rag["searches_per_question"] == 2.0
    assert rag["n"] == 4 and len(rag["accuracy_ci"]) == 2
    label = rag["per_label"]["category"]["search_required"]
    assert REQUIRED_KEYS <= set(label) and label["n"] == 3 and label["accuracy"] == pytest.approx(2 / 3)
    assert data["datasets"]["all"]["on_demand"]["n"] == 8
    assert data["datasets"]["fvqa"]["on_demand"]["correct_without_search"] == pytest.approx(0.25)


def test_markdown_table_rows():
    text = markdown_table(_table(), match="em")
    assert "accuracy by `em`" in text
    row = next(line for line in text.splitlines() if line.startswith("| fvqa | rag |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "4" and cells[3].startswith("75.0 [") and cells[4].startswith("100.0") and cells[8] == "2.00"
    assert "## Per `search_need`" in text and "| fvqa: image_text | direct |" in text
    header_cells = next(line for line in text.splitlines() if line.startswith("| data |")).count("|")
    assert all(line.count("|") == header_cells for line in text.splitlines() if line.startswith("| fvqa"))


def test_plots_are_written_as_png(tmp_path):
    table = _table()
    for fn, name in ((plot_accuracy_vs_search_ratio, "a.png"), (plot_per_label, "b.png")):
        path = fn(table, tmp_path / name)
        with Image.open(path) as img:
            assert img.format == "PNG" and img.width > 300
            colors = img.convert("RGB").getcolors(1 << 20)
            assert len(colors) > 10  # something was drawn, not a blank canvas


def _trajectory(sample_id="s<1>", answer="<b>bold</b> & co", correct_meta="search_free"):
    red = Image.new("RGB", (40, 30), (220, 20, 20))
    blue = Image.new("RGB", (40, 30), (20, 20, 220))
    messages = [
        Message("user", [ImageRef(0), "What is <this>? </article><script>alert(1)</script>"]),
        Message("assistant", ["<reason>not sure</reason><search><img></search>"]),
        Message("user", ["<information>\n1. ", ImageRef(1), " Blue page\n</information>"]),
        Message("assistant", [f"<reason>ok</reason><answer>{answer}</answer>"]),
    ]
    return Trajectory(sample_id=sample_id, group_id="g", messages=messages, token_ids=[], loss_mask=[], logprobs=[],
                      images=[red, blue], actions=["image_search", "answer"], end_reason="answer", image_searches=1,
                      final_answer=answer, gold_answers=["bold"],
                      reward=RewardBreakdown(reward=0.91, accuracy=1.0, format=1.0, search_count=1, penalty=0.9, answer=answer),
                      meta={"dataset": "demo", "workflow": "on_demand", "category": correct_meta, "search_need": "image"})


def test_viewer_escapes_all_text_and_stores_each_image_once():
    page = render_viewer([ViewerEntry(_trajectory(), True), ViewerEntry(_trajectory("s2"), False)])
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "</article><script>" not in page
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in page and "s&lt;1&gt;" in page
    images = json.loads(re.search(r'<script type="application/json" id="images">(.*?)</script>', page, re.S).group(1))
    assert len(images) == 2 and all(v.startswith("data:image/jpeg;base64,") for v in images.values())
    assert page.count('data-img="') == 4  # two trajectories x two images, sharing two stored images
    assert page.count('<article class="traj"') == 2
    assert 'data-correct="1"' in page and 'data-correct="0"' in page and 'data-labels="search_free image"' in page
    assert "reward 0.910" in page
    for name in ("f-correct", "f-searched", "f-label", "f-workflow", "f-dataset"):
        assert f'id="{name}"' in page


def test_results_json_function_is_plain_data():
    data = results_json(_table(), match="judge")
    json.dumps(data)  # raises if anything is not JSON-ready
    assert data["datasets"]["infoseek"]["direct"]["search_ratio"] == 0.0
