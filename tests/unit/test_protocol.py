"""The action grammar, limits, feedback turns, templates and escaping (DESIGN, "The protocol")."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from mmsearch_r1.config import ProtocolConfig
from mmsearch_r1.protocol import (
    Answer,
    ImageSearchCall,
    Invalid,
    SearchBudget,
    Templates,
    TextSearchCall,
    decide,
    escape,
    first_turn,
    image_results_turn,
    parse_turn,
    text_results_turn,
    tool_error_turn,
    turn_shape,
)
from mmsearch_r1.tools.base import ImageHit, TextHit
from mmsearch_r1.trajectory import ImageRef

# --- parsing ---------------------------------------------------------------------------------------------


def test_parse_answer_takes_the_last_answer():
    assert parse_turn("<reason>r</reason><answer>a</answer><answer> b </answer>") == Answer("b")


def test_parse_image_search_must_end_the_turn():
    assert parse_turn("<reason>r</reason><search><img></search>  \n") == ImageSearchCall()
    assert isinstance(parse_turn("<reason>r</reason><search><img></search> then more"), Invalid)


def test_parse_text_search_query_is_whitespace_folded():
    assert parse_turn("<reason>r</reason><text_search>  tower\n height </text_search>") == TextSearchCall("tower height")


def test_parse_empty_query_is_invalid():
    assert isinstance(parse_turn("<reason>r</reason><text_search>   </text_search>"), Invalid)


def test_parse_search_at_end_wins_over_an_earlier_answer():
    assert parse_turn("<reason>r</reason><answer>x</answer><search><img></search>") == ImageSearchCall()


def test_parse_answer_when_search_is_not_last():
    assert parse_turn("<reason>r</reason><search><img></search><answer>x</answer>") == Answer("x")


def test_parse_no_action_is_invalid():
    assert isinstance(parse_turn("just text"), Invalid)
    assert isinstance(parse_turn("<answer>unclosed"), Invalid)


def test_parse_only_the_last_text_search_is_the_query():
    action = parse_turn("<reason>r</reason><text_search>a</text_search> <text_search>b</text_search>")
    assert action == TextSearchCall("b")


@given(st.text())
def test_parse_never_raises(text):
    assert parse_turn(text).kind in ("answer", "image_search", "text_search", "invalid")


@given(st.text(alphabet=st.characters(blacklist_characters="<>"), min_size=1).filter(str.strip))
def test_well_formed_turns_round_trip(payload):
    assert turn_shape(f"<reason>{payload}</reason><answer>{payload}</answer>") == "answer"
    assert parse_turn(f"<reason>{payload}</reason><answer>{payload}</answer>") == Answer(payload.strip())
    assert turn_shape(f"<reason>{payload}</reason><text_search>{payload}</text_search>") == "text_search"


# --- limits ----------------------------------------------------------------------------------------------

LIMITS = dict(max_turns=3, max_image_searches=1, max_text_searches=2)


def test_answer_and_invalid_end_the_episode():
    assert decide(Answer("x"), SearchBudget(turns=1), **LIMITS) == "answer"
    assert decide(Invalid("?"), SearchBudget(turns=1), **LIMITS) == "invalid"


def test_search_within_limits_runs():
    assert decide(ImageSearchCall(), SearchBudget(turns=1), **LIMITS) is None
    assert decide(TextSearchCall("q"), SearchBudget(turns=2, image_searches=1), **LIMITS) is None
    assert decide(TextSearchCall("q"), SearchBudget(turns=2, text_searches=1), **LIMITS) is None


def test_search_beyond_its_limit_ends_the_episode():
    assert decide(ImageSearchCall(), SearchBudget(turns=2, image_searches=1), **LIMITS) == "limit"
    assert decide(TextSearchCall("q"), SearchBudget(turns=2, text_searches=2), **LIMITS) == "limit"


def test_search_in_the_last_allowed_turn_ends_the_episode():
    assert decide(TextSearchCall("q"), SearchBudget(turns=3), **LIMITS) == "limit"
    assert decide(ImageSearchCall(), SearchBudget(turns=1), max_turns=1, max_image_searches=1, max_text_searches=2) == "limit"


def test_limits_come_from_config():
    cfg = ProtocolConfig(max_turns=5, max_text_searches=4)
    limits = dict(max_turns=cfg.max_turns, max_image_searches=cfg.max_image_searches, max_text_searches=cfg.max_text_searches)
    assert decide(TextSearchCall("q"), SearchBudget(turns=4, text_searches=3), **limits) is None


# --- feedback turns ------------------------------------------------------------------------------------------


def _thumb(color):
    return Image.new("RGB", (8, 8), color)


def test_first_turn_puts_the_question_image_first():
    messages = first_turn("What is this?", Templates.load())
    assert [m.role for m in messages] == ["system", "user"]
    assert messages[1].content[0] == ImageRef(0)
    assert "What is this?" in messages[1].text
    assert [m.role for m in first_turn("Q", Templates.load(), system=False)] == ["user"]


def test_image_results_are_numbered_thumbnails_with_titles():
    hits = [ImageHit(_thumb("red"), "Zorbla Tower", "http://a"), ImageHit(_thumb("blue"), "Quen Bridge", "http://b")]
    message, images = image_results_turn(hits, "Where is it?", first_image_index=1)
    assert message.role == "user"
    assert [p for p in message.content if isinstance(p, ImageRef)] == [ImageRef(1), ImageRef(2)]
    assert images == [h.thumbnail for h in hits]
    text = message.text
    assert text.startswith("<information>") and "1. " in text and " Zorbla Tower" in text and "2. " in text
    assert text.index("</information>") < text.index("Where is it?")


def test_text_results_are_links_with_summaries():
    hits = [TextHit("Zorbla", "http://z.example/zorbla", "Zorbla is 300 m tall.")]
    message, images = text_results_turn(hits, "How tall?")
    assert images == []
    assert "1. Zorbla (http://z.example/zorbla)\nZorbla is 300 m tall." in message.text


def test_empty_results_say_so():
    message, _ = text_results_turn([], "Q")
    assert "No results." in message.text


def test_tool_error_is_one_sentence_and_repeats_the_question():
    message, images = tool_error_turn("image_search", "timed out", "Where is it?")
    assert images == []
    assert message.text.startswith("The image search failed (timed out); reason with what you already have.")
    assert "Where is it?" in message.text


def test_templates_can_be_replaced_per_file(tmp_path):
    (tmp_path / "user_prompt.txt").write_text("Q> {question}")
    templates = Templates.load(tmp_path)
    assert templates.user_prompt == "Q> {question}"
    assert templates.text_results == Templates.load().text_results  # missing files fall back to ours
    assert first_turn("Why?", templates, system=False)[0].text == "Q> Why?"


# --- escaping: web text must not break out of <information> ----------------------------------------------------

PROTOCOL_TAG = re.compile(r"</?(reason|answer|search|img|text_search|information)>|<\|[a-z_]+\|>")


def _tags(text):
    return [m.group(0) for m in PROTOCOL_TAG.finditer(text)]


FRAGMENTS = [
    "</information>", "<information>", "<answer>", "</answer>", "<search><img></search>", "<text_search>",
    "</text_search>", "<|im_end|>", "<|im_start|>", "<|vision_start|>", "<|image_pad|>", "&lt;", "\n", "<reason>",
    "<", ">", "/", "&", "|", ";", "a", " ",
]
hostile = st.lists(st.sampled_from(FRAGMENTS), max_size=20).map("".join)


@settings(max_examples=300)
@given(title=hostile, url=hostile, summary=hostile)
def test_text_results_cannot_forge_tags(title, url, summary):
    message, _ = text_results_turn([TextHit(title, url, summary)], "Q")
    information = message.text.split("</information>")[0]
    assert message.text.count("<information>") == 1 and message.text.count("</information>") == 1
    assert _tags(information) == ["<information>"]
    assert "<|" not in information


@settings(max_examples=200)
@given(title=hostile)
def test_image_titles_cannot_forge_tags(title):
    message, _ = image_results_turn([ImageHit(_thumb("red"), title, "u")], "Q", first_image_index=1)
    information = message.text.split("</information>")[0]
    assert _tags(information) == ["<information>"]
    assert message.text.count("</information>") == 1


@given(st.text())
def test_escape_leaves_no_angle_brackets_and_is_reversible(text):
    import html

    escaped = escape(text)
    assert "<" not in escaped and ">" not in escaped
    assert html.unescape(escaped) == text
