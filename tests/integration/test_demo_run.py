"""The whole demo, CI-sized: every stage runs on the small world, results.json has every figure, and a second
run reuses the finished stages."""

import json

import pytest

from mmsearch_r1.config import load_config
from mmsearch_r1.demo import DEMO_WORKFLOWS, SPLITS, STAMP, demo_config_path, run_demo

FIGURES = {"accuracy", "search_ratio", "searches_per_question", "search_ratio_free", "search_ratio_required", "correct_without_search", "n"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    cfg = load_config(demo_config_path("small"), ["train.progress=false"])
    return cfg, out, run_demo(cfg, out)


def test_every_stage_runs_and_results_hold_every_figure(demo):
    cfg, out, path = demo
    results = json.loads(path.read_text())
    for split in SPLITS:
        assert set(results[split]) == set(DEMO_WORKFLOWS)
        for workflow, figures in results[split].items():
            assert set(figures) == FIGURES, (split, workflow)
            assert figures["n"] > 0 and 0.0 <= figures["accuracy"] <= 1.0
        assert results[split]["direct"]["search_ratio"] == 0.0 and results[split]["rag"]["search_ratio"] == 1.0
    assert {"accuracy_vs_rag", "searches_vs_rag", "free_below_required", "correct_without_search_up"} <= set(results["criteria"])
    assert results["balance"]["selected"]["search_free"] > 0 and results["balance"]["selected"]["search_required"] > 0
    rows = [json.loads(line) for line in (out / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == cfg.train.steps
    assert any(r["search_ratio_free"] is not None for r in rows) and any(r["search_ratio_required"] is not None for r in rows)
    for name in ("results.md", "accuracy_vs_searches.png", "training_dynamics.png", "eval_grpo/viewer.html"):
        assert (out / name).is_file(), name


def test_a_second_run_reuses_every_stage(demo, capsys):
    cfg, out, path = demo
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob(STAMP)}
    run_demo(cfg, out)
    assert len(stamps) >= 7 and {p: p.stat().st_mtime_ns for p in out.rglob(STAMP)} == stamps
