"""Prompt order, RNG capture, checkpoint folders, per-step metrics and the trainer's small helpers."""

import json
from dataclasses import asdict
import random

import numpy as np
import pytest
import torch

from mmsearch_r1.config import load_config
from mmsearch_r1.errors import ConfigError
from mmsearch_r1.reward import RewardBreakdown
from mmsearch_r1.train.metrics import StepMetrics, UpdateStats, episode_stats, read_metrics, truncate_metrics, MetricsLog
from mmsearch_r1.train.state import PromptSampler, latest_checkpoint, list_checkpoints, rng_state, set_rng_state
from mmsearch_r1.train.trainer import _chunks, _pad, _resume_point, step_seed
from mmsearch_r1.trajectory import Message, Trajectory


def test_sampler_covers_each_epoch_once_and_reshuffles():
    s = PromptSampler(5, seed=3)
    first, second = s.take(5), s.take(5)
    assert sorted(first) == sorted(second) == [0, 1, 2, 3, 4]
    assert first != second or PromptSampler(5, seed=4).take(5) != first  # epochs are fresh permutations


def test_sampler_crosses_epochs_and_resumes_from_its_state():
    a = PromptSampler(4, seed=0)
    a.take(3)
    saved = json.loads(json.dumps(a.state_dict()))
    rest = a.take(6)
    b = PromptSampler(4, seed=0)
    b.load_state_dict(saved)
    assert b.take(6) == rest
    assert saved == {"epoch": 0, "offset": 3, "size": 4, "seed": 0}


def test_rng_state_round_trip_repeats_draws():
    state = rng_state()
    draws = (random.random(), np.random.rand(), torch.rand(2).tolist())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(2).tolist()) == draws


def test_step_seed_depends_on_seed_and_step_only():
    assert step_seed(3, 5) == step_seed(3, 5)
    assert len({step_seed(0, s) for s in range(1, 200)}) == 199


def test_chunks_and_pad():
    assert _chunks(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert _chunks(list(range(7)), 3, by_count=True) == [[0, 1, 2], [3, 4, 5], [6]]
    assert _chunks([0, 1], 4, by_count=True) == [[0], [1]]
    padded = _pad([torch.tensor([1.0, 2.0]), torch.tensor([3.0])])
    assert padded.tolist() == [[1.0, 2.0], [3.0, 0.0]]


def test_checkpoints_are_listed_in_step_order_and_temporary_ones_ignored(tmp_path):
    for name in ("step_000010", "step_000002", "step_000011.tmp", "other"):
        (tmp_path / "checkpoints" / name).mkdir(parents=True)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000002", "step_000010"]
    assert latest_checkpoint(tmp_path).name == "step_000010"


def test_resume_point_refuses_to_overwrite_or_resume_nothing(tmp_path):
    with pytest.raises(ConfigError, match="no checkpoint"):
        _resume_point(tmp_path, resume=True)
    # killed before its first checkpoint: nothing to resume, a fresh start replaces the stale metrics
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    assert _resume_point(tmp_path, resume=False) is None
    assert (tmp_path / "metrics.jsonl").read_text() == ""
    (tmp_path / "checkpoints" / "step_000002").mkdir(parents=True)
    with pytest.raises(ConfigError, match="--resume"):
        _resume_point(tmp_path, resume=False)
    assert _resume_point(tmp_path, resume=True).name == "step_000002"


def _trajectory(reward, accuracy, fmt, image=0, text=0, failures=0, mask=(0, 1, 1)):
    return Trajectory(
        sample_id="s", group_id="g", messages=[Message("assistant", ["x"])], token_ids=list(range(len(mask))),
        loss_mask=list(mask), logprobs=[0.0] * len(mask), images=[], actions=["answer"], end_reason="answer",
        image_searches=image, text_searches=text, tool_failures=failures,
        reward=RewardBreakdown(reward=reward, accuracy=accuracy, format=fmt, search_count=image + text),
    )


def test_episode_stats_by_hand():
    trajectories = [
        _trajectory(1.0, 1.0, 1.0),
        _trajectory(0.9, 1.0, 1.0, image=1, text=1, failures=1, mask=(0, 1, 1, 0, 1)),
        _trajectory(0.1, 0.0, 1.0, text=2),
        _trajectory(0.0, 0.0, 0.0),
    ]
    stats = episode_stats(trajectories)
    assert stats.reward == pytest.approx(0.5)
    assert stats.accuracy == 0.5
    assert stats.format_rate == 0.75
    assert stats.search_ratio == 0.5
    assert stats.image_search_ratio == 0.25
    assert stats.text_search_ratio == 0.5
    assert stats.searches_per_episode == 1.0
    assert stats.tool_failures == 1
    assert stats.tokens == 3 + 5 + 3 + 3
    assert stats.sampled_tokens == 2 + 3 + 2 + 2
    assert stats.episodes == 4


def test_episode_stats_refuses_unscored_trajectories():
    t = _trajectory(1.0, 1.0, 1.0)
    t.reward = None
    with pytest.raises(ValueError):
        episode_stats([t])


def test_metrics_log_writes_reads_and_truncates(tmp_path):
    stats = episode_stats([_trajectory(1.0, 1.0, 1.0)])
    update = UpdateStats(policy_loss=-0.1, kl=0.01, entropy=2.0, clip_fraction=0.0, grad_norm=0.5)
    log = MetricsLog(tmp_path)
    for step in (1, 2, 3):
        log.write(StepMetrics.join(step, stats, update, lr=1e-3, search_penalty=0.1, step_time_s=1.0, rollout_time_s=0.5, update_time_s=0.5))
    log.close()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r.step for r in rows] == [1, 2, 3]
    assert rows[0].kl == 0.01 and rows[0].reward == 1.0
    truncate_metrics(tmp_path / "metrics.jsonl", 2)
    assert [r.step for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]


def test_read_metrics_reads_files_written_before_the_per_label_search_ratios(tmp_path):
    stats = episode_stats([_trajectory(1.0, 1.0, 1.0)])
    update = UpdateStats(policy_loss=-0.1, kl=0.01, entropy=2.0, clip_fraction=0.0, grad_norm=0.5)
    row = asdict(StepMetrics.join(1, stats, update, lr=1e-3, search_penalty=0.1, step_time_s=1.0, rollout_time_s=0.5, update_time_s=0.5))
    del row["search_ratio_free"], row["search_ratio_required"]
    (tmp_path / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    [old] = read_metrics(tmp_path / "metrics.jsonl")
    assert old.step == 1 and old.search_ratio_free is None and old.search_ratio_required is None


def test_train_config_bounds_and_defaults():
    cfg = load_config(None, [])
    assert (cfg.train.kl_coef, cfg.train.clip_ratio, cfg.engine.sampling.temperature) == (0.001, 0.2, 1.0)
    assert (cfg.reward.search_penalty, cfg.reward.format_weight) == (0.1, 0.1)
    with pytest.raises(ConfigError, match="train.group_size"):
        load_config(None, ["train.group_size=1"])
    with pytest.raises(ConfigError, match="train.device"):
        load_config(None, ["train.device=tpu"])


def test_demo_config_loads_and_keeps_the_published_values():
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "demo.toml")
    assert (cfg.train.kl_coef, cfg.train.clip_ratio, cfg.engine.sampling.temperature) == (0.001, 0.2, 1.0)
    assert (cfg.reward.search_penalty, cfg.reward.format_weight) == (0.1, 0.1)
    assert cfg.train.data is not None and cfg.model.path is not None


def test_train_command_help_offers_resume():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "mmsearch_r1", "train", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert "--resume" in result.stdout and "--config" in result.stdout and "metrics.jsonl" in result.stdout


def test_optional_loggers_are_import_guarded(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def without(name, *args, **kwargs):
        if name in ("wandb", "torch.utils.tensorboard"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without)
    with pytest.raises(ConfigError, match="train.tensorboard"):
        MetricsLog(tmp_path, tensorboard=True)
    with pytest.raises(ConfigError, match="train.wandb"):
        MetricsLog(tmp_path, wandb=True)
    MetricsLog(tmp_path).close()  # both off: nothing optional is imported
