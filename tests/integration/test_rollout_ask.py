"""``mmsearch-r1 ask``: one question through the tiny model, or through an OpenAI-compatible server on loopback."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from PIL import Image
from typer.testing import CliRunner

from mmsearch_r1.cli import app
from mmsearch_r1.errors import ConfigError
from mmsearch_r1.models import ModelConfig, build_tiny_policy, build_tokenizer
from mmsearch_r1.tools.local_image import build_image_index
from mmsearch_r1.tools.local_text import build_text_index

from loopback import ChatServer, completion

COLORS = ["red", "green", "blue", "yellow"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A folder laid out like a demo world's tool part: image_index/ and text_index/."""
    root = tmp_path_factory.mktemp("world")
    pages = [{"url": f"http://w/{c}", "title": f"The {c} guild", "text": f"The {c} guild comes from Quux."} for c in COLORS]
    build_text_index(pages, root / "text_index")
    build_image_index([(Image.new("RGB", (40, 40), c), f"The {c} guild", f"http://w/{c}") for c in COLORS], root / "image_index")
    Image.new("RGB", (50, 40), "red").save(root / "question.png")
    return root


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("policy")
    tokenizer = build_tokenizer(["The red guild comes from Quux."] * 5, vocab_size=400)
    cfg = ModelConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2, num_kv_heads=1, vision_hidden_size=32, vision_heads=2, vision_intermediate_size=64)
    build_tiny_policy(cfg, tokenizer).save(folder)
    return folder


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _ask(*args):
    return CliRunner().invoke(app, ["ask", *map(str, args)], catch_exceptions=False)


def test_ask_with_the_tiny_model_prints_the_trajectory_record(world, model_dir):
    result = _ask("--model", model_dir, "--world", world, "--image", world / "question.png", "--question", "Where is this guild from?",
                  "--json", "--seed", 3, "--set", "engine.sampling.max_new_tokens=16")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert len(record["token_ids"]) == len(record["loss_mask"]) == len(record["logprobs"]) > 0
    assert sum(record["loss_mask"]) > 0 and record["messages"][1]["content"][0] == {"image": 0}
    assert record["end_reason"] in ("answer", "invalid", "limit") and len(record["actions"]) >= 1
    again = json.loads(_ask("--model", model_dir, "--world", world, "--image", world / "question.png", "--question",
                            "Where is this guild from?", "--json", "--seed", 3, "--set", "engine.sampling.max_new_tokens=16").stdout)
    assert again["token_ids"] == record["token_ids"]


def test_ask_prints_turns_and_answer_for_people(world, model_dir):
    result = _ask("--model", model_dir, "--world", world, "--image", world / "question.png", "--question", "Where?",
                  "--set", "engine.sampling.max_new_tokens=8")
    assert result.exit_code == 0, result.output
    assert "assistant" in result.stdout and "[image 0]" in result.stdout and "answer:" in result.stdout


def _searcher(body):
    """Searches by image once, then answers from the titles it was shown."""
    searched = any(m["role"] == "assistant" for m in body["messages"])
    return 200, completion("<reason>Seen it.</reason><answer>Quux</answer>" if searched else "<reason>Unknown.</reason><search><img></search>")


def test_ask_through_an_openai_compatible_server(world):
    with ChatServer(_searcher) as server:
        result = _ask("--engine", "openai", "--base-url", server.url, "--model-name", "served", "--world", world,
                      "--image", world / "question.png", "--question", "Where is this guild from?", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert (record["actions"], record["final_answer"], record["image_searches"]) == (["image_search", "answer"], "Quux", 1)
    assert record["token_ids"] == [] == record["loss_mask"]
    titles = [p["text"] for p in server.requests[1]["messages"][3]["content"] if p["type"] == "text"]
    assert any("The red guild" in t for t in titles)  # the nearest thumbnail's title came from the real image index


def test_user_errors_are_one_line_without_traceback(world, tmp_path):
    cli = [sys.executable, "-c", "from mmsearch_r1.cli import main; main()"]
    result = subprocess.run([*cli, "ask", "--image", str(tmp_path / "nope.png"), "--question", "q", "--world", str(world)], capture_output=True, text=True)
    assert result.returncode == 2 and "nope.png does not exist" in result.stderr and "Traceback" not in result.stderr
    result = subprocess.run([*cli, "ask", "--image", str(world / "question.png"), "--question", "q", "--world", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 2 and "has no image_index/" in result.stderr


def test_bad_options_name_the_option_and_the_fix(world, model_dir, tmp_path):
    asked = ["--model", model_dir, "--image", world / "question.png", "--question", "Where?"]
    cases = [
        (["--world", world, "--workflow", "agentic"], "workflow `agentic` is unknown; use direct, rag or on-demand"),
        (["--world", world, "--temperature", -1], "--temperature -1.0 is not allowed: input should be greater than or equal to 0"),
        (["--world", world, "--save-images", tmp_path / "images"], "add --json"),
        ([], "pass --world DIR"),
        (["--world", world, "--question", " "], "--question is empty"),
    ]
    for extra, message in cases:
        with pytest.raises(ConfigError, match=re.escape(message)):
            _ask(*asked, *extra)
    assert not (tmp_path / "images").exists()
    for workflow in ("on_demand", "direct"):  # underscores work as well as dashes (the default, on-demand)
        assert _ask(*asked, "--world", world, "--workflow", workflow, "--set", "engine.sampling.max_new_tokens=4").exit_code == 0
