"""The demo's own parts: stage caching, figures from evaluation results, the reproduction criteria."""

import io
import json

from rich.console import Console

from mmsearch_r1.config import load_config
from mmsearch_r1.demo import NO_PENALTY, Stage, StageRunner, criteria, demo_config_path, demo_metrics, fingerprint, grpo_fingerprint, stage_done, unmet_checks


def metrics(accuracy, search_ratio, searches, free=None, required=None, cws=0.0, n=100):
    per_label = {}
    if free is not None:
        per_label["category"] = {"search_free": {"search_ratio": free}, "search_required": {"search_ratio": required}}
    return {"accuracy": accuracy, "search_ratio": search_ratio, "searches_per_question": searches,
            "correct_without_search": cws, "n": n, "per_label": per_label}


def quiet():
    return Console(file=io.StringIO())


def test_fingerprint_depends_on_every_part():
    assert fingerprint({"a": 1}, "x") == fingerprint({"a": 1}, "x")
    assert fingerprint({"a": 1}, "x") != fingerprint({"a": 2}, "x") != fingerprint({"a": 1}, "y")


def test_the_no_penalty_ablation_is_kept_when_only_the_penalty_changes():
    demo = load_config(demo_config_path("small"))
    other = load_config(demo_config_path("small"), ["reward.search_penalty=0.3"])
    assert grpo_fingerprint("data", demo) != grpo_fingerprint("data", other)  # the demo's GRPO reruns
    assert grpo_fingerprint("data", demo, **NO_PENALTY) == grpo_fingerprint("data", other, **NO_PENALTY)
    assert grpo_fingerprint("data", demo, **NO_PENALTY) != grpo_fingerprint("data", load_config(demo_config_path("small"), ["train.lr=1e-4"]), **NO_PENALTY)


def test_stages_run_once_then_are_cached_until_their_inputs_change(tmp_path):
    calls = []
    make = lambda folder: calls.append(folder.name) or folder.mkdir(parents=True, exist_ok=True)  # noqa: E731
    stages = [Stage("a", tmp_path / "a", "s1", make, 1.0), Stage("b", tmp_path / "b", "s2", make, 1.0)]
    StageRunner(stages, quiet()).run()
    assert calls == ["a", "b"] and stage_done(tmp_path / "a", "s1")
    StageRunner(stages, quiet()).run()
    assert calls == ["a", "b"]  # both cached
    stages[1] = Stage("b", tmp_path / "b", "s2-changed", make, 1.0)
    StageRunner(stages, quiet()).run()
    assert calls == ["a", "b", "b"]


def test_a_failed_stage_is_not_marked_done(tmp_path):
    def broken(folder):
        raise RuntimeError("boom")

    try:
        StageRunner([Stage("a", tmp_path / "a", "s", broken, 1.0)], quiet()).run()
    except RuntimeError:
        pass
    assert not stage_done(tmp_path / "a", "s")


def test_demo_metrics_read_the_per_label_search_ratios():
    m = demo_metrics(metrics(0.8, 0.5, 0.7, free=0.1, required=0.9, cws=0.4))
    assert m == {"accuracy": 0.8, "search_ratio": 0.5, "searches_per_question": 0.7, "search_ratio_free": 0.1,
                 "search_ratio_required": 0.9, "correct_without_search": 0.4, "n": 100}
    assert demo_metrics(metrics(0.8, 0.5, 0.7))["search_ratio_free"] is None


def results(od, rag, pre):
    return {"in_domain": {"on_demand": demo_metrics(od), "rag": demo_metrics(rag), "pretrained": demo_metrics(pre)}}


def test_criteria_met():
    checks = criteria(results(metrics(0.70, 0.5, 0.9, free=0.1, required=0.8, cws=0.35),
                              metrics(0.71, 1.0, 2.0), metrics(0.5, 0.6, 1.0, cws=0.2)))
    assert {name: c["met"] for name, c in checks.items()} == {
        "accuracy_vs_rag": True, "searches_vs_rag": True, "free_below_required": True, "correct_without_search_up": True}
    assert checks["searches_vs_rag"]["ratio"] == 0.45


def test_criteria_not_met_are_reported_with_their_figures():
    checks = criteria(results(metrics(0.60, 0.9, 1.5, free=0.85, required=0.9, cws=0.1),
                              metrics(0.70, 1.0, 2.0), metrics(0.5, 0.6, 1.0, cws=0.2)))
    assert not any(c["met"] for c in checks.values())
    assert checks["accuracy_vs_rag"] == {"on_demand": 0.60, "rag": 0.70, "met": False}


def test_ablation_criteria():
    data = results(metrics(0.7, 0.5, 0.9), metrics(0.7, 1.0, 2.0), metrics(0.5, 0.6, 1.0))
    data["ablations"] = {"no_penalty": {"final_training_search_ratio": 0.95}, "unbalanced": {"final_training_search_ratio": 0.6}}
    checks = criteria(data)
    assert checks["no_penalty_search_ratio_high"]["met"] is True
    assert checks["unbalanced_search_ratio_high"]["met"] is False
    json.dumps(checks)  # results.json must be able to hold them


def test_unmet_checks_names_the_failed_checks_of_a_pretraining_report(tmp_path):
    report = tmp_path / "pretrain_report.json"
    assert unmet_checks(report) == []
    report.write_text(json.dumps({"checks": {"sight_facts answered directly": True, "reads results (rag accuracy >= 0.8)": False}}))
    assert unmet_checks(report) == ["reads results (rag accuracy >= 0.8)"]


def test_an_interrupted_stage_resumes_only_from_work_made_with_the_same_inputs(tmp_path):
    seen = []

    def make(folder, fail=False):
        seen.append(sorted(p.name for p in folder.iterdir() if p.name != ".stage.json"))
        (folder / "checkpoint").write_text("step 5")
        if fail:
            raise RuntimeError("interrupted")

    folder = tmp_path / "grpo"
    try:
        StageRunner([Stage("grpo", folder, "s1", lambda f: make(f, fail=True), 1.0)], quiet()).run()
    except RuntimeError:
        pass
    StageRunner([Stage("grpo", folder, "s1", make, 1.0)], quiet()).run()  # same inputs: resumes
    assert seen == [[], ["checkpoint"]] and stage_done(folder, "s1")
    StageRunner([Stage("grpo", folder, "s2", make, 1.0)], quiet()).run()  # other inputs: starts afresh
    assert seen[-1] == [] and stage_done(folder, "s2") and not stage_done(folder, "s1")
    (folder / ".stage.json").unlink()  # a folder with no record of its inputs is not trusted either
    StageRunner([Stage("grpo", folder, "s2", make, 1.0)], quiet()).run()
    assert seen[-1] == []
