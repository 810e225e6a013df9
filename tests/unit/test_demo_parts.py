"""The demo's own parts: stage caching, figures from evaluation results, the reproduction criteria."""

import io
import json
import os
import pickle
import sys
import time
from functools import partial
from pathlib import Path

import pytest
from rich.console import Console

from mmsearch_r1.config import load_config
from mmsearch_r1.demo import (NO_PENALTY, STAGE_LOG, Stage, StageRunner, ablation_stages, balanced_fingerprint, criteria, demo_config_path, demo_metrics,
                              fingerprint, grpo_fingerprint, label_groups, pretrained_fingerprint, stage_done, unmet_checks, world_fingerprint)
from mmsearch_r1.errors import ConfigError


def metrics(accuracy, search_ratio, searches, free=None, required=None, cws=0.0, n=100):
    per_label = {}
    if free is not None:
        per_label["category"] = {"search_free": {"search_ratio": free}, "search_required": {"search_ratio": required}}
    return {"accuracy": accuracy, "search_ratio": search_ratio, "searches_per_question": searches,
            "correct_without_search": cws, "n": n, "per_label": per_label}


def quiet():
    return Console(file=io.StringIO())


def test_the_world_stamp_follows_the_default_size_preset_and_keeps_the_small_worlds(monkeypatch):
    import mmsearch_r1.world.config as world_config
    from mmsearch_r1.config import load_config, stamp_settings

    small = load_config(demo_config_path("small"))
    assert world_fingerprint(small) == fingerprint(small.seed, stamp_settings(small.world))  # the stamp small folders were made with
    default = load_config(None, ["world.size=default"])
    now = world_fingerprint(default)
    monkeypatch.setitem(world_config.SIZE_PRESETS, "default", {**world_config.SIZE_PRESETS["default"], "entities": 96})
    assert world_fingerprint(default) != now  # a world of the old preset is not reused
    assert world_fingerprint(small) == fingerprint(small.seed, stamp_settings(small.world))


def test_fingerprint_depends_on_every_part():
    assert fingerprint({"a": 1}, "x") == fingerprint({"a": 1}, "x")
    assert fingerprint({"a": 1}, "x") != fingerprint({"a": 2}, "x") != fingerprint({"a": 1}, "y")


def test_the_no_penalty_ablation_is_kept_when_only_the_penalty_changes():
    demo = load_config(demo_config_path("small"))
    other = load_config(demo_config_path("small"), ["reward.search_penalty=0.3"])
    assert grpo_fingerprint("data", demo) != grpo_fingerprint("data", other)  # the demo's GRPO reruns
    assert grpo_fingerprint("data", demo, **NO_PENALTY) == grpo_fingerprint("data", other, **NO_PENALTY)
    assert grpo_fingerprint("data", demo, **NO_PENALTY) != grpo_fingerprint("data", load_config(demo_config_path("small"), ["train.lr=1e-4"]), **NO_PENALTY)


def test_the_balanced_set_is_made_again_when_the_penalty_decides_its_labels():
    config = lambda *overrides: load_config(demo_config_path("small"), list(overrides))  # noqa: E731
    assert balanced_fingerprint("p", config()) == balanced_fingerprint("p", config("reward.search_penalty=0.3"))  # the published rule
    weighed = "balance.drop_search_paying=true"
    assert balanced_fingerprint("p", config(weighed)) != balanced_fingerprint("p", config(weighed, "reward.search_penalty=0.3"))
    assert balanced_fingerprint("p", config()) != balanced_fingerprint("p", config(weighed))


def test_a_pretraining_by_older_demonstrations_is_made_again(monkeypatch):
    import mmsearch_r1.models.config as model_config

    cfg = load_config(demo_config_path("small"))
    now = pretrained_fingerprint("world", cfg)
    assert now == pretrained_fingerprint("world", load_config(demo_config_path("small"), ["pretrain.threads=2"]))
    assert now == pretrained_fingerprint("world", load_config(demo_config_path("small"), ["pretrain.device=cpu"]))
    assert now != pretrained_fingerprint("world", load_config(demo_config_path("small"), ["pretrain.device=cuda"]))  # another model
    assert now == pretrained_fingerprint("world", load_config(demo_config_path("small"), ["pretrain.name_before_query=false", "pretrain.direct_drill_share=0.0"]))
    assert now != pretrained_fingerprint("world", load_config(demo_config_path("small"), ["pretrain.direct_drill_share=0.5"]))
    assert now != pretrained_fingerprint("world", load_config(demo_config_path("small"), ["pretrain.name_before_query=true"]))
    monkeypatch.setattr(model_config, "DEMONSTRATIONS_VERSION", model_config.DEMONSTRATIONS_VERSION - 1)
    assert pretrained_fingerprint("world", cfg) != now


def test_the_time_left_follows_the_pace_of_the_stages_made(tmp_path):
    now = [0.0]
    clock = lambda: now[0]  # noqa: E731
    out = io.StringIO()

    def stage(name, estimate, takes):
        return Stage(name, tmp_path / name, "s", lambda f: now.__setitem__(0, now[0] + takes), estimate)

    # the world, too short to judge a pace by, then a pretraining 3 times faster than planned
    stages = [stage("world", 2, 20), stage("pretrain", 300, 100), stage("grpo", 600, 200), stage("eval", 30, 10)]
    runner = StageRunner(stages, Console(file=out, width=200), clock=clock)
    assert runner.left_s(0) == 932
    runner.run()
    text = out.getvalue()
    assert "about 15m32s left" in text  # before anything ran: the planning figures
    assert "[2/4] pretrain — about 15m30s left" in text  # the world alone does not set the pace
    assert "[3/4] grpo — about 4m10s left" in text  # (20 + 100) s for (2 + 300) planned: (600 + 30) x 120 / 302 = 250 s
    assert runner.pace() == 330 / 932
    # a stage resumed from its checkpoints (started before, not done) does part of its work: no pace from it
    (tmp_path / "grpo" / ".stage.json").write_text(json.dumps({"fingerprint": "s", "done": False}))
    resumed = StageRunner(stages, Console(file=io.StringIO()), clock=clock)
    resumed.run()
    assert resumed.made == [] and resumed.pace() == 1.0


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
    assert json.loads((tmp_path / "a" / ".stage.json").read_text()) == {"fingerprint": "s", "done": False}


# Stages made beside another run in a spawned second process: their ``make`` must be module-level to pickle.

def wait_for(path, folder):
    """The main stage: waits until the stage beside it has written ``path`` (it would wait forever if the two took turns)."""
    deadline = time.monotonic() + 120
    while not path.exists():
        assert time.monotonic() < deadline, "the stage beside never ran"
        time.sleep(0.02)
    (folder / "pid").write_text(str(os.getpid()))


def write_pid(path, folder):
    print("made beside")
    path.write_text(str(os.getpid()))


def fail(folder):
    raise ValueError("the side stage failed")


def die(folder):
    os._exit(3)


def sleep_long(folder):
    time.sleep(120)


def write_pid_and_sleep(path, folder):
    path.write_text(str(os.getpid()))
    time.sleep(120)


def run_beside_forever(flag):
    """The demo's process in the test below: a main stage that never ends, a stage beside it that says its pid."""
    stages = [Stage("main", flag.parent / "main", "s", lambda f: time.sleep(300), 1.0),
              Stage("side", flag.parent / "side", "s", partial(write_pid_and_sleep, flag), 1.0, beside="main")]
    StageRunner(stages, quiet()).run()


def running(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie has ended; only its exit status is left


class TwoPartError(Exception):
    """An error that pickles and cannot be rebuilt from its pickle (its ``__init__`` wants two arguments)."""

    def __init__(self, first, second):
        super().__init__(f"{first} {second}")


def fail_oddly(folder):
    raise TwoPartError("odd", "failure")


def test_stages_beside_another_are_made_at_the_same_time_in_a_second_process(tmp_path):
    flag, out = tmp_path / "flag", io.StringIO()
    stages = [Stage("main", tmp_path / "main", "s", partial(wait_for, flag), 10.0, threads=1),
              Stage("side", tmp_path / "side", "s", partial(write_pid, flag), 30.0, threads=1, beside="main"),
              Stage("last", tmp_path / "last", "s", lambda f: None, 5.0)]
    runner = StageRunner(stages, Console(file=out, width=200))
    assert runner.left_s(0) == 35.0  # the longer of the two, then the last
    seconds = runner.run()
    assert set(seconds) == {"main", "side", "last"} and all(stage_done(s.folder, "s") for s in stages)
    assert int(flag.read_text()) != os.getpid() == int((tmp_path / "main" / "pid").read_text())
    assert "made beside" in (tmp_path / "side" / STAGE_LOG).read_text()  # its output is kept, not mixed into the display
    assert "[2/3] side: done in" in out.getvalue() and "beside main" in out.getvalue()
    assert [planned for planned, _ in runner.made] == [10.0, 5.0]  # the pace comes from this process's stages


def test_an_error_beside_a_stage_stops_the_run_when_that_stage_is_done(tmp_path):
    stages = [Stage("main", tmp_path / "main", "s", lambda f: None, 1.0), Stage("side", tmp_path / "side", "s", fail, 1.0, beside="main")]
    with pytest.raises(ValueError, match="the side stage failed") as error:
        StageRunner(stages, quiet()).run()
    assert stage_done(tmp_path / "main", "s") and not stage_done(tmp_path / "side", "s")
    assert "ValueError: the side stage failed" in (tmp_path / "side" / STAGE_LOG).read_text()  # with its traceback
    if sys.version_info >= (3, 11):  # where exceptions carry notes
        assert STAGE_LOG in error.value.__notes__[0]
    stages[1] = Stage("side", tmp_path / "side", "s", lambda f: None, 1.0, beside="main")
    StageRunner(stages, quiet()).run()  # run again: the main stage is cached, the side stage made here
    assert stage_done(tmp_path / "side", "s")


def test_a_second_process_that_ends_without_a_word_is_reported(tmp_path):
    stages = [Stage("main", tmp_path / "main", "s", lambda f: None, 1.0), Stage("side", tmp_path / "side", "s", die, 1.0, beside="main")]
    with pytest.raises(RuntimeError, match="exit code 3.*running the demo again resumes them"):
        StageRunner(stages, quiet()).run()


def test_an_error_that_does_not_come_back_whole_still_names_its_type_and_message(tmp_path):
    stages = [Stage("main", tmp_path / "main", "s", lambda f: None, 1.0), Stage("side", tmp_path / "side", "s", fail_oddly, 1.0, beside="main")]
    with pytest.raises(RuntimeError, match="TwoPartError: odd failure"):
        StageRunner(stages, quiet()).run()


def test_the_second_process_ends_when_the_stage_beside_it_fails(tmp_path):
    def broken(folder):
        raise RuntimeError("the main stage failed")

    stages = [Stage("main", tmp_path / "main", "s", broken, 1.0), Stage("side", tmp_path / "side", "s", sleep_long, 1.0, beside="main")]
    began = time.monotonic()
    with pytest.raises(RuntimeError, match="the main stage failed"):
        StageRunner(stages, quiet()).run()
    assert time.monotonic() - began < 60 and not stage_done(tmp_path / "side", "s")


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads process states from /proc")
def test_the_second_process_ends_when_the_demos_process_is_killed(tmp_path):
    import signal
    import subprocess

    flag = tmp_path / "pid"
    script = f"import sys; sys.path[:0] = {sys.path!r}; from pathlib import Path; import {__name__} as t; t.run_beside_forever(Path({str(flag)!r}))"
    demo = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while not flag.exists() or not flag.read_text():
            assert time.monotonic() < deadline and demo.poll() is None, "the stage beside never started"
            time.sleep(0.05)
        second = int(flag.read_text())
        demo.send_signal(signal.SIGKILL)  # no clean-up runs in the demo's process
        demo.wait()
        deadline = time.monotonic() + 30
        while running(second):
            assert time.monotonic() < deadline, "the second process outlived the demo's"
            time.sleep(0.05)
    finally:
        demo.kill()


def test_beside_a_cached_stage_the_first_waiting_stage_runs_here_and_the_others_in_a_second_process(tmp_path):
    flags = [tmp_path / "one", tmp_path / "two"]
    make = lambda folder: None  # noqa: E731
    StageRunner([Stage("main", tmp_path / "main", "s", make, 1.0)], quiet()).run()
    stages = [Stage("main", tmp_path / "main", "s", make, 1.0),
              Stage("one", tmp_path / "a", "s", partial(write_pid, flags[0]), 1.0, beside="main"),
              Stage("two", tmp_path / "b", "s", partial(write_pid, flags[1]), 1.0, beside="main")]
    StageRunner(stages, quiet()).run()
    assert int(flags[0].read_text()) == os.getpid() != int(flags[1].read_text())


def test_stages_that_cannot_run_beside_another_are_refused_by_name(tmp_path):
    make = lambda folder: None  # noqa: E731
    with pytest.raises(ValueError, match="'side' is to run beside 'mian'"):
        StageRunner([Stage("main", tmp_path / "main", "s", make, 1.0), Stage("side", tmp_path / "side", "s", make, 1.0, beside="mian")], quiet())
    with pytest.raises(TypeError, match="side cannot run in a second process.*pickles"):  # a lambda does not pickle
        StageRunner([Stage("main", tmp_path / "main", "s", make, 1.0), Stage("side", tmp_path / "side", "s", make, 1.0, beside="main")], quiet()).run()


def test_the_demos_stages_made_beside_another_pickle(tmp_path, monkeypatch):
    import mmsearch_r1.demo as demo

    class Caught(Exception):
        pass

    class Capture:
        def __init__(self, stages, console):
            self.stages = stages

        def run(self):
            raise Caught(self.stages)

    monkeypatch.setattr(demo, "StageRunner", Capture)
    with pytest.raises(Caught) as caught:
        demo.run_demo(load_config(demo_config_path("small")), tmp_path, console=quiet())
    side = [stage for stage in caught.value.args[0] if stage.beside]
    assert [s.beside for s in side] == ["balance", "balance"]
    for stage in side:
        pickle.dumps(stage)


def test_a_stage_runs_on_its_own_threads_whatever_ran_before_it(tmp_path):
    import torch

    seen = []
    before = torch.get_num_threads()
    try:
        stages = [Stage("a", tmp_path / "a", "s", lambda f: torch.set_num_threads(2), 1.0),
                  Stage("b", tmp_path / "b", "s", lambda f: seen.append(torch.get_num_threads()), 1.0, threads=1)]
        StageRunner(stages, quiet()).run()
    finally:
        torch.set_num_threads(before)
    assert seen == [1]


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
    (folder / ".stage.json").unlink()  # files the demo did not make are neither resumed nor deleted
    with pytest.raises(ConfigError, match="did not make"):
        StageRunner([Stage("grpo", folder, "s2", make, 1.0)], quiet()).run()
    assert (folder / "checkpoint").is_file() and len(seen) == 3


def test_a_stage_recorded_by_an_older_version_is_still_cached(tmp_path):
    folder = tmp_path / "world"
    folder.mkdir()
    (folder / "world.json").write_text("{}")
    (folder / ".stage.json").write_text(json.dumps({"fingerprint": "s", "seconds": 2.0}))  # no "done" key
    seconds = StageRunner([Stage("world", folder, "s", lambda f: pytest.fail("redone"), 1.0)], quiet()).run()
    assert seconds == {"world": 2.0} and (folder / "world.json").is_file()


def test_run_reports_the_seconds_of_every_stage_by_folder(tmp_path):
    make = lambda folder: None  # noqa: E731
    StageRunner([Stage("a", tmp_path / "a", "s1", make, 1.0)], quiet()).run()
    seconds = StageRunner([Stage("a", tmp_path / "a", "s1", make, 1.0), Stage("b stage", tmp_path / "b", "s2", make, 1.0)], quiet()).run()
    assert set(seconds) == {"a", "b"} and all(isinstance(v, float) for v in seconds.values())


def test_the_ablations_fingerprints_follow_what_each_run_uses(tmp_path):
    def stamps(*overrides):
        cfg = load_config(demo_config_path("small"), list(overrides))
        stamps = {name: fingerprint(name) for name in ("pretrained", "balanced")}
        stamps["grpo"] = grpo_fingerprint(stamps["balanced"], cfg)
        dirs = {"pretrained": tmp_path / "p", "world": tmp_path / "w", "balanced": tmp_path / "b"}
        stages = ablation_stages(cfg, tmp_path, dirs, stamps, {"grpo": 1.0, "eval": 1.0, "pretrain": 1.0})
        return {stage.folder.name: stage.stamp for stage in stages}

    demo, other_penalty = stamps(), stamps("reward.search_penalty=0.3")
    assert demo["no_penalty"] == other_penalty["no_penalty"]  # trained without the penalty either way
    assert demo["sft"] == other_penalty["sft"]
    assert demo["unbalanced"] != other_penalty["unbalanced"]  # trained with the demo's penalty
    assert demo["eval_no_penalty"] != other_penalty["eval_no_penalty"]  # it reports rewards
    assert stamps("reward.penalty_warmup_steps=5")["no_penalty"] == demo["no_penalty"]  # the ablation sets it to 0
    assert stamps("train.threads=2", "train.progress=false")["unbalanced"] == demo["unbalanced"]  # how it runs, not what
    assert stamps("train.lr=1e-4")["no_penalty"] != demo["no_penalty"]


def test_workflows_at_nearly_the_same_point_share_a_label():
    points = {"direct": (0.0, 25.9), "pretrained": (0.04, 28.4), "rag": (2.0, 71.6), "oracle": (0.98, 82.7), "on_demand": (1.0, 70.0)}
    assert label_groups(points) == [["direct", "pretrained"], ["rag"], ["oracle"], ["on_demand"]]
