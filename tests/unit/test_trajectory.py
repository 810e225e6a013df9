"""The trajectory record: invariants and a JSONL round trip with images by reference."""

import pytest
from PIL import Image

from mmsearch_r1.reward import score
from mmsearch_r1.trajectory import ImageRef, Message, Trajectory, read_jsonl, write_jsonl


def make_trajectory(sample_id="s1", color="red"):
    turns = ["<reason>r</reason><search><img></search>", "<reason>r</reason><answer>Paris</answer>"]
    messages = [
        Message("user", [ImageRef(0), "What city?"]),
        Message("assistant", [turns[0]]),
        Message("user", ["<information>\n1. ", ImageRef(1), " Paris tower\n</information>"]),
        Message("assistant", [turns[1]]),
    ]
    return Trajectory(
        sample_id=sample_id, group_id="g1", messages=messages,
        token_ids=[1, 2, 3, 4], loss_mask=[0, 1, 0, 1], logprobs=[0.0, -0.5, 0.0, -1.25],
        images=[Image.new("RGB", (6, 4), color), Image.new("RGB", (3, 3), "blue")],
        actions=["image_search", "answer"], end_reason="answer", image_searches=1,
        final_answer="Paris", gold_answers=["Paris"], reward=score(turns, ["Paris"]),
        meta={"category": "search_required", "search_need": "image"},
    )


def test_lengths_must_agree():
    with pytest.raises(ValueError, match="equal lengths"):
        Trajectory("s", "g", [], [1, 2], [1], [0.0, 0.0], [], [], "answer")


def test_assistant_turns_are_what_the_reward_scores():
    trajectory = make_trajectory()
    assert trajectory.assistant_turns[1] == "<reason>r</reason><answer>Paris</answer>"
    assert trajectory.searches == 1


def test_chat_form_places_images():
    chat = make_trajectory().messages[2].to_chat()
    assert [p["type"] for p in chat["content"]] == ["text", "image", "text"]


def test_jsonl_round_trip_with_shared_images(tmp_path):
    first, second = make_trajectory("s1"), make_trajectory("s2")
    path = tmp_path / "trajectories.jsonl"
    write_jsonl([first, second], path)
    images = list((tmp_path / "trajectories_images").iterdir())
    assert len(images) == 2  # identical images are stored once
    back = list(read_jsonl(path))
    assert [t.sample_id for t in back] == ["s1", "s2"]
    restored = back[0]
    assert restored.messages == first.messages
    assert restored.token_ids == first.token_ids and restored.loss_mask == first.loss_mask
    assert restored.logprobs == first.logprobs
    assert restored.reward == first.reward
    assert [im.size for im in restored.images] == [(6, 4), (3, 3)]
    assert restored.images[0].getpixel((0, 0)) == (255, 0, 0)
    assert restored.meta == first.meta


def test_append_mode_adds_lines(tmp_path):
    path = tmp_path / "t.jsonl"
    write_jsonl([make_trajectory("a")], path)
    write_jsonl([make_trajectory("b", "green")], path, append=True)
    assert [t.sample_id for t in read_jsonl(path)] == ["a", "b"]
