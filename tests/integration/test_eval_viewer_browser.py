"""The HTML trajectory viewer opened in headless Chromium: turns, images and filters render.

CI needs a Chromium binary (Debian: ``apt-get install -y chromium``); without one the test is skipped and says so.
"""

import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from mmsearch_r1.eval.viewer import ViewerEntry, write_viewer
from mmsearch_r1.reward import RewardBreakdown
from mmsearch_r1.trajectory import ImageRef, Message, Trajectory

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "headless_shell")
BROWSER = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no Chromium binary on PATH; install it with `apt-get install -y chromium`")

RED, BLUE = (230, 10, 10), (10, 10, 230)


def _trajectory(sample_id, *, searched, category, workflow):
    question = Image.new("RGB", (64, 48), RED)
    thumb = Image.new("RGB", (40, 30), BLUE)
    messages = [Message("user", [ImageRef(0), f"Question {sample_id}: which <tower> is this?"])]
    images = [question]
    if searched:
        messages += [Message("assistant", ["<reason>unknown</reason><search><img></search>"]),
                     Message("user", ["<information>\n1. ", ImageRef(1), " Zorblat Tower page\n</information>"])]
        images.append(thumb)
    messages.append(Message("assistant", [f"<reason>ok</reason><answer>Answer {sample_id}</answer>"]))
    return Trajectory(sample_id=sample_id, group_id=sample_id, messages=messages, token_ids=[], loss_mask=[], logprobs=[],
                      images=images, actions=(["image_search"] if searched else []) + ["answer"], end_reason="answer",
                      image_searches=int(searched), final_answer=f"Answer {sample_id}", gold_answers=["Zorblat"],
                      reward=RewardBreakdown(reward=0.1, accuracy=0.0, format=1.0, search_count=int(searched)),
                      meta={"dataset": "demo", "workflow": workflow, "category": category})


def _browser(args, tmp_path):
    profile = tmp_path / f"profile{len(list(tmp_path.iterdir()))}"
    command = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@pytest.fixture
def viewer(tmp_path):
    entries = [
        ViewerEntry(_trajectory("q1", searched=True, category="search_required", workflow="on_demand"), True),
        ViewerEntry(_trajectory("q2", searched=False, category="search_free", workflow="on_demand"), False),
        ViewerEntry(_trajectory("q3", searched=True, category="search_required", workflow="rag"), False),
    ]
    return write_viewer(entries, tmp_path / "viewer.html")


def _body(dom):
    return re.search(r"<body([^>]*)>", dom).group(1)


def test_turns_and_images_render_after_the_script_ran(viewer, tmp_path):
    result = _browser(["--dump-dom", viewer.as_uri()], tmp_path)
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    body = _body(dom)
    assert 'data-shown="3"' in body
    # 3 question images + 2 thumbnails, all decoded by the browser (naturalWidth > 0)
    assert 'data-images-loaded="5"' in body and 'data-images-total="5"' in body
    assert dom.count('src="data:image/jpeg;base64,') == 5
    assert "Question q2: which &lt;tower&gt; is this?" in dom
    assert "&lt;answer&gt;Answer q1&lt;/answer&gt;" in dom and "Zorblat Tower page" in dom
    assert "3 of 3 shown" in dom


def test_filters_preset_in_the_address_hide_the_others(viewer, tmp_path):
    dom = _browser(["--dump-dom", viewer.as_uri() + "#correct=0&searched=1"], tmp_path).stdout
    assert 'data-shown="1"' in _body(dom) and "1 of 3 shown" in dom  # only q3
    dom = _browser(["--dump-dom", viewer.as_uri() + "#label=search_free"], tmp_path).stdout
    assert 'data-shown="1"' in _body(dom)
    dom = _browser(["--dump-dom", viewer.as_uri() + "#workflow=on_demand&correct=1"], tmp_path).stdout
    assert 'data-shown="1"' in _body(dom)


def test_screenshot_shows_the_question_image_and_the_thumbnail(viewer, tmp_path):
    shot = tmp_path / "shot.png"
    result = _browser(["--window-size=1000,900", f"--screenshot={shot}", viewer.as_uri()], tmp_path)
    assert shot.is_file(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)

    def near(color):
        return int((np.abs(pixels - np.array(color)).max(axis=-1) < 40).sum())

    assert near(RED) > 500 and near(BLUE) > 300
