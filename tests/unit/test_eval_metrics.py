"""Evaluation metrics against numbers computed by hand."""

import math

import numpy as np
import pytest

from mmsearch_r1.eval.metrics import ALL, Outcome, bootstrap_ci, breakdown, outcome_of, summarize, summarize_with_labels
from mmsearch_r1.trajectory import Message, Trajectory


def _outcomes():
    # id, correct, image, text, failures, latency, dataset, workflow, category, need
    return [
        Outcome("q1", True, 0, 0, 0, 1.0, "d", "on_demand", "search_free", "none"),
        Outcome("q2", True, 1, 0, 0, 2.0, "d", "on_demand", "search_required", "image"),
        Outcome("q3", False, 1, 2, 1, 3.0, "d", "on_demand", "search_required", "image_text"),
        Outcome("q4", False, 0, 1, 0, 4.0, "d", "on_demand", "search_required", "text"),
        Outcome("q5", True, 1, 1, 2, 10.0, "d", "on_demand", "search_required", "image_text"),
    ]


def test_summarize_matches_hand_computed_values():
    m = summarize(_outcomes(), bootstrap_samples=0)
    assert m.n == 5
    assert m.accuracy == pytest.approx(3 / 5)
    assert m.search_ratio == pytest.approx(4 / 5)  # q2..q5 searched
    assert m.image_search_ratio == pytest.approx(3 / 5)  # q2, q3, q5
    assert m.text_search_ratio == pytest.approx(3 / 5)  # q3, q4, q5
    assert m.both_search_ratio == pytest.approx(2 / 5)  # q3, q5
    assert m.searches_per_question == pytest.approx((0 + 1 + 3 + 1 + 2) / 5)
    assert m.correct_without_search == pytest.approx(1 / 5)  # only q1
    assert m.tool_failures == 3
    assert m.tool_failure_rate == pytest.approx(3 / 7)
    assert m.latency_mean_s == pytest.approx(4.0)
    assert m.latency_p95_s == pytest.approx(float(np.quantile([1, 2, 3, 4, 10], 0.95)))
    assert m.accuracy_ci is None and m.search_ratio_ci is None


def test_accuracy_splits_into_with_and_without_search():
    m = summarize(_outcomes(), bootstrap_samples=0)
    correct_with_search = 2 / 5  # q2, q5
    assert m.accuracy == pytest.approx(m.correct_without_search + correct_with_search)


def test_no_latency_and_no_search_give_none_and_zero():
    m = summarize([Outcome("a", False), Outcome("b", True)], bootstrap_samples=0)
    assert m.latency_mean_s is None and m.latency_p95_s is None
    assert m.tool_failure_rate == 0.0 and m.search_ratio == 0.0 and m.correct_without_search == 0.5


def test_summarize_refuses_an_empty_group():
    with pytest.raises(ValueError):
        summarize([])


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    values = [1.0] * 30 + [0.0] * 70
    a = bootstrap_ci(values, samples=500, seed=3)
    b = bootstrap_ci(values, samples=500, seed=3)
    c = bootstrap_ci(values, samples=500, seed=4)
    assert a == b and a != c
    lo, hi = a
    assert lo < 0.3 < hi
    # normal approximation: half-width ~ 1.96 * sqrt(0.3 * 0.7 / 100) = 0.0898
    assert (hi - lo) / 2 == pytest.approx(1.96 * math.sqrt(0.21 / 100), abs=0.02)


def test_bootstrap_ci_of_a_constant_is_degenerate_and_level_widens():
    assert bootstrap_ci([0.0] * 10, samples=100) == (0.0, 0.0)
    values = [0.0, 1.0] * 40
    lo90, hi90 = bootstrap_ci(values, samples=2000, level=0.90, seed=0)
    lo99, hi99 = bootstrap_ci(values, samples=2000, level=0.99, seed=0)
    assert lo99 < lo90 and hi99 > hi90


def test_summarize_attaches_cis():
    m = summarize(_outcomes(), bootstrap_samples=200, seed=0)
    assert m.accuracy_ci[0] <= m.accuracy <= m.accuracy_ci[1]
    assert m.search_ratio_ci[0] <= m.search_ratio <= m.search_ratio_ci[1]


def test_per_label_groups():
    m = summarize_with_labels(_outcomes(), bootstrap_samples=0)
    cat = m.per_label["category"]
    assert set(cat) == {"search_free", "search_required"}
    assert cat["search_free"].n == 1 and cat["search_free"].accuracy == 1.0 and cat["search_free"].search_ratio == 0.0
    assert cat["search_required"].n == 4 and cat["search_required"].accuracy == pytest.approx(0.5)
    need = m.per_label["search_need"]
    assert need["image_text"].n == 2 and need["image_text"].both_search_ratio == 1.0
    assert need["image_text"].accuracy == pytest.approx(0.5)
    data = m.to_json()
    assert data["per_label"]["category"]["search_required"]["n"] == 4


def test_breakdown_per_dataset_and_workflow_with_pooled_all():
    outs = _outcomes() + [
        Outcome("x1", True, 0, 0, dataset="e", workflow="direct"),
        Outcome("x2", False, 0, 0, dataset="e", workflow="direct"),
        Outcome("q1", False, 0, 0, dataset="d", workflow="direct"),
    ]
    table = breakdown(outs, bootstrap_samples=0)
    assert set(table) == {"d", "e", ALL}
    assert set(table["d"]) == {"on_demand", "direct"}
    assert table["e"]["direct"].accuracy == 0.5
    assert table[ALL]["direct"].n == 3 and table[ALL]["direct"].accuracy == pytest.approx(1 / 3)
    assert table[ALL]["on_demand"].n == 5


def test_breakdown_of_one_dataset_has_no_pooled_row():
    assert set(breakdown(_outcomes(), bootstrap_samples=0)) == {"d"}


def test_outcome_of_reads_trajectory_counts_and_meta():
    t = Trajectory(
        sample_id="s1", group_id="g", messages=[Message("assistant", ["<answer>x</answer>"])], token_ids=[], loss_mask=[],
        logprobs=[], images=[], actions=["image_search", "answer"], end_reason="answer", image_searches=1, text_searches=0,
        tool_failures=1, final_answer="x", meta={"dataset": "fvqa", "workflow": "rag", "category": "search_required", "latency_s": 0.5},
    )
    o = outcome_of(t, True)
    assert (o.sample_id, o.correct, o.searches, o.tool_failures, o.dataset, o.workflow, o.category, o.search_need, o.latency_s) == (
        "s1", True, 1, 1, "fvqa", "rag", "search_required", None, 0.5)
