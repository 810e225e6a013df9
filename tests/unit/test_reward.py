"""The reward, rule by rule, with hand-worked numbers (DESIGN, "The reward")."""

import pytest

from mmsearch_r1.errors import RewardError
from mmsearch_r1.protocol import REFUSAL
from mmsearch_r1.reward import (
    format_score,
    is_correct,
    normalize_answer,
    penalty_schedule,
    score,
    search_count,
)

ANSWER = "<reason>I recognise it.</reason><answer>{}</answer>"
IMAGE = "<reason>I do not know this place.</reason><search><img></search>"
TEXT = "<reason>I need the fact.</reason><text_search>Zorbla tower height</text_search>"


def answer(text="Paris"):
    return ANSWER.format(text)


# --- normalization and matching ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Paris", "paris"),
        ("  PARIS  ", "paris"),
        ("The Louvre", "louvre"),
        ("an apple", "apple"),
        ("A", ""),
        ("Theatre", "theatre"),  # an article only as a whole word
        ("Saint-Étienne!", "saintétienne"),
        ("U.S.A.", "usa"),
        ("New\t\nYork  City", "new york city"),
        ("«Rome»", "rome"),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_exact_match_needs_equality_after_normalization():
    assert is_correct("the Eiffel Tower.", ["Eiffel tower"], "em")
    assert not is_correct("Eiffel Tower in Paris", ["Eiffel tower"], "em")


def test_substring_match_accepts_a_gold_inside_the_prediction():
    assert is_correct("Eiffel Tower in Paris", ["Eiffel tower"], "subem")
    assert not is_correct("Tower", ["Eiffel tower"], "subem")


def test_any_alias_counts():
    assert is_correct("ESP", ["Spain", "Kingdom of Spain", "ESP"], "em")


def test_refusal_scores_zero_even_when_a_gold_is_inside_it():
    assert not is_correct(REFUSAL, ["question"], "subem")
    assert not is_correct(REFUSAL, [REFUSAL], "em")


def test_empty_prediction_is_wrong_under_subem():
    assert not is_correct("the", ["Paris"], "subem")


def test_unknown_match_raises():
    with pytest.raises(RewardError):
        is_correct("x", ["x"], "fuzzy")


# --- accuracy: which answer counts --------------------------------------------------------------------


def test_last_answer_of_last_turn_wins():
    turn = "<reason>first London, then</reason><answer>London</answer> no: <answer>Paris</answer>"
    assert score([turn], ["Paris"]).accuracy == 1.0
    turn = "<reason>r</reason><answer>Paris</answer><answer>London</answer>"
    assert score([turn], ["Paris"]).accuracy == 0.0


def test_answer_in_an_earlier_turn_does_not_count():
    turns = ["<reason>r</reason><answer>Paris</answer><search><img></search>", "<reason>r</reason> no answer"]
    assert score(turns, ["Paris"]).accuracy == 0.0


def test_no_answer_scores_zero_accuracy():
    assert score(["<reason>hmm</reason>"], ["Paris"]).accuracy == 0.0


# --- turn shapes and sequences -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "turns",
    [
        [answer()],
        [IMAGE, answer()],
        [TEXT, answer()],
        [IMAGE, TEXT, answer()],
        ["  \n" + answer() + "\n "],  # leading/trailing whitespace is stripped
        ["<reason>r</reason> so the answer is <answer>Paris</answer>"],  # free text between reason and answer
    ],
)
def test_allowed_sequences_have_format_one(turns):
    assert format_score(turns) == 1.0


@pytest.mark.parametrize(
    "turns",
    [
        [TEXT, TEXT, answer()],  # text -> text
        [TEXT, IMAGE, answer()],  # text -> image
        [IMAGE, IMAGE, answer()],
        [IMAGE, TEXT, TEXT, answer()],  # more than three turns
        [IMAGE],  # ends in a search
        [answer(), answer()],
        ["<answer>Paris</answer>"],  # no reason
        ["<reason>r</reason>"],  # no action
        ["<reason>a</reason><reason>b</reason><answer>Paris</answer>"],  # two reasons
        ["<reason>r</reason><answer>Paris</answer> trailing"],  # answer not at the very end
        ["<reason>r</reason><answer>Pa</answer><answer>ris</answer>"],  # two answers
        ["<reason>r</reason><search><img></search><answer>Paris</answer>"],  # search tag in an answer turn
        ["<reason>r</reason><answer>x <text_search>q</text_search></answer>"],
        ["<reason>r</reason><search><img></search> more"],  # search not last
        ["<reason>r</reason><text_search> </text_search>", answer()],  # empty query
        ["<reason>r</reason><answer>x</answer><reason>r</reason>"],
        ["preamble <reason>r</reason><answer>Paris</answer>"],  # reason must open the turn
        ["<answer>Paris</answer><reason>r</reason>"],
    ],
)
def test_malformed_turns_or_sequences_have_format_zero_and_do_not_raise(turns):
    assert format_score(turns) == 0.0
    assert score(turns, ["Paris"]).format == 0.0


# --- search count ----------------------------------------------------------------------------------------


def test_search_count_counts_turns_before_the_last():
    assert search_count([answer()]) == 0
    assert search_count([IMAGE, answer()]) == 1
    assert search_count([IMAGE, TEXT, answer()]) == 2
    assert search_count([TEXT, TEXT, answer()]) == 2


def test_a_turn_with_both_tags_counts_once():
    assert search_count(["<reason>r</reason><search><img></search><text_search>q</text_search>", answer()]) == 1


def test_one_turn_trajectory_counts_its_own_search_tag():
    turn = "<reason>r</reason><answer>Paris <search><img></search></answer>"
    result = score([turn], ["Paris"])
    assert result.search_count == 1
    assert result.format == 0.0


def test_search_tag_in_last_turn_of_multi_turn_is_not_counted():
    turns = [IMAGE, "<reason>r</reason><answer>Paris</answer><text_search>q</text_search>"]
    assert search_count(turns) == 1


# --- the combined reward, hand-worked ----------------------------------------------------------------------


def test_correct_without_search():
    r = score([answer()], ["Paris"])
    # (1 - 0.1) * 1 * 1 + 0.1 * 1
    assert (r.reward, r.accuracy, r.format, r.search_count, r.penalty) == (1.0, 1.0, 1.0, 0, 1.0)


def test_correct_with_one_search_is_penalized():
    r = score([IMAGE, answer()], ["Paris"])
    # 0.9 * 1 * (1 - 0.1) + 0.1 * 1 = 0.81 + 0.1
    assert r.reward == pytest.approx(0.91)
    assert r.penalty == pytest.approx(0.9)


def test_correct_with_two_searches_flat_penalty():
    r = score([IMAGE, TEXT, answer()], ["Paris"])
    assert r.reward == pytest.approx(0.91)


def test_per_search_penalty_variant():
    r = score([IMAGE, TEXT, answer()], ["Paris"], per_search_penalty=True)
    # 0.9 * 1 * 0.9^2 + 0.1 = 0.729 + 0.1
    assert r.reward == pytest.approx(0.829)
    r = score([IMAGE, TEXT, answer()], ["Paris"], search_penalty=0.5, per_search_penalty=True)
    assert r.reward == pytest.approx(0.9 * 0.25 + 0.1)


def test_penalty_only_when_correct():
    r = score([IMAGE, answer("London")], ["Paris"])
    assert r.penalty == 1.0
    assert r.reward == pytest.approx(0.1)  # format only


def test_wrong_and_malformed_scores_zero():
    r = score(["<reason>r</reason><answer>London</answer> x"], ["Paris"])
    assert (r.reward, r.accuracy, r.format) == (0.0, 0.0, 0.0)


def test_correct_but_malformed():
    r = score([TEXT, TEXT, answer()], ["Paris"])
    # 0.9 * 1 * 0.9 + 0.1 * 0
    assert r.reward == pytest.approx(0.81)


def test_custom_weights():
    r = score([IMAGE, answer()], ["Paris"], format_weight=0.3, search_penalty=0.2)
    assert r.reward == pytest.approx(0.7 * 0.8 + 0.3)


def test_subem_through_score():
    assert score([answer("the city of Paris")], ["Paris"], match="subem").accuracy == 1.0
    assert score([answer("the city of Paris")], ["Paris"], match="em").accuracy == 0.0


def test_refusal_through_score():
    r = score([answer(REFUSAL)], [REFUSAL.split()[-1]], match="subem")
    assert r.accuracy == 0.0 and r.format == 1.0 and r.reward == pytest.approx(0.1)


def test_answer_is_reported():
    assert score([answer(" Paris ")], ["Paris"]).answer == "Paris"


# --- the warm-up schedule ----------------------------------------------------------------------------------


def test_penalty_warmup_ramps_linearly():
    assert penalty_schedule(0, 0.1, 10) == 0.0
    assert penalty_schedule(5, 0.1, 10) == pytest.approx(0.05)
    assert penalty_schedule(10, 0.1, 10) == pytest.approx(0.1)
    assert penalty_schedule(100, 0.1, 10) == pytest.approx(0.1)
    assert penalty_schedule(0, 0.1, 0) == pytest.approx(0.1)


def test_warmup_penalty_feeds_score():
    p = penalty_schedule(2, 0.1, 4)
    assert score([IMAGE, answer()], ["Paris"], search_penalty=p).reward == pytest.approx(0.9 * 0.95 + 0.1)


# --- failures raise ----------------------------------------------------------------------------------------


def test_no_turns_raises():
    with pytest.raises(RewardError):
        score([], ["Paris"])


def test_no_gold_raises():
    with pytest.raises(RewardError):
        score([answer()], [])
    with pytest.raises(RewardError):
        score([answer()], ["  "])


def test_out_of_range_weights_raise():
    with pytest.raises(RewardError):
        score([answer()], ["Paris"], format_weight=1.5)
