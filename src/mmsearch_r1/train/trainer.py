"""The single-process GRPO trainer: rollout, score, update, log, checkpoint; resumable exactly.

Each step draws ``prompts_per_step`` questions, rolls out ``group_size`` episodes of each with the current
policy (the same model object the optimizer updates), scores them with ``mmsearch_r1.reward.score``, turns the
rewards into group-relative advantages and takes ``ppo_epochs × mini_batches`` clipped policy-gradient steps
over the sampled tokens, with a k3 KL term to the frozen initial policy. The GRPO math is in
``mmsearch_r1.train.grpo``; what is saved for an exact resume is in ``mmsearch_r1.train.state``.

Determinism: the rollout of step ``s`` is seeded from ``(seed, s)`` and the prompt order from ``seed`` and the
epoch, so a run resumed from a checkpoint repeats the per-step metrics of an uninterrupted run bit for bit
(same machine, same thread count). Timing fields are the only exception.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from mmsearch_r1.config import config_to_toml, save_config
from mmsearch_r1.errors import ConfigError
from mmsearch_r1.files import existing_file
from mmsearch_r1.progress import progress_bar
from mmsearch_r1.train.metrics import MetricsLog, StepMetrics, UpdateStats, episode_stats, truncate_metrics
from mmsearch_r1.train.state import (
    PromptSampler,
    TrainerState,
    latest_checkpoint,
    load_trainer_state,
    quiet_transformers,
    rng_state,
    save_checkpoint,
    set_rng_state,
)

if TYPE_CHECKING:
    import torch

    from mmsearch_r1.data import VQASample
    from mmsearch_r1.models import Policy
    from mmsearch_r1.tools.base import Toolbox
    from mmsearch_r1.train.config import TrainConfig
    from mmsearch_r1.trajectory import Trajectory

INITIAL_POLICY = "initial_policy"  # the frozen reference of a run whose policy was built from scratch
FINAL_POLICY = "policy"


def train(cfg, *, resume: bool = False, toolbox: "Toolbox | None" = None) -> Path:
    """Train the policy of ``cfg`` with GRPO; return the folder of the final policy (``<out_dir>/policy``).

    ``resume`` continues the run in ``cfg.out_dir`` from its newest checkpoint. ``toolbox`` replaces the one
    built from ``cfg.tools`` (tests pass scripted tools).
    """
    import torch

    from mmsearch_r1.models.policy import require_device
    from mmsearch_r1.reward import penalty_schedule
    from mmsearch_r1.rollout import rollout
    from mmsearch_r1.train.grpo import group_advantages, group_index

    # --- setup -----------------------------------------------------------------------------------------
    tc: TrainConfig = cfg.train
    require_device(tc.device, "train.device")
    if cfg.engine.type == "hf":
        require_device(cfg.engine.device, "engine.device")
    out = Path(cfg.out_dir)
    torch.set_num_threads(tc.threads)
    checkpoint = _resume_point(out, resume)
    samples = _training_samples(cfg)
    with quiet_transformers():
        policy = _load_or_build_policy(cfg, out, checkpoint, samples)
        reference = _reference_policy(cfg, out) if tc.kl_coef > 0 else None
    engine = _engine(cfg, policy)
    toolbox = toolbox if toolbox is not None else _toolbox(cfg)
    optimizer, scheduler = _optimizer(policy, tc)
    sampler = PromptSampler(len(samples), cfg.seed)
    start = 0
    if checkpoint is not None:
        state = load_trainer_state(checkpoint)
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        sampler.load_state_dict(state.sampler)
        set_rng_state(state.rng)
        start = state.step
        truncate_metrics(out / "metrics.jsonl", start)
    else:
        _seed_everything(cfg.seed)
    save_config(cfg, out)
    log = MetricsLog(out, tensorboard=tc.tensorboard, wandb=tc.wandb, wandb_project=tc.wandb_project,
                     run_config=cfg.model_dump(mode="json"), resume=resume)

    with progress_bar("train", tc.steps, enabled=tc.progress, completed=start) as advance:
        for step in range(start + 1, tc.steps + 1):
            began = time.perf_counter()
            # --- rollout -----------------------------------------------------------------------------
            batch = [samples[i] for i in sampler.take(tc.prompts_per_step)]
            trajectories = rollout(
                batch, engine, toolbox, n=tc.group_size, protocol=cfg.protocol, sampling=cfg.engine.sampling,
                seed=step_seed(cfg.seed, step), workflow=tc.workflow,
            )
            rolled = time.perf_counter()
            # --- score -------------------------------------------------------------------------------
            search_penalty = penalty_schedule(step - 1, cfg.reward.search_penalty, cfg.reward.penalty_warmup_steps)
            _score_all(trajectories, cfg.reward, search_penalty)
            rewards = torch.tensor([t.reward.reward for t in trajectories], dtype=torch.float64)
            advantages = group_advantages(rewards, group_index([t.group_id for t in trajectories]), normalize_std=tc.normalize_std)
            # --- update ------------------------------------------------------------------------------
            lr = optimizer.param_groups[0]["lr"]
            update = policy_update(policy, reference, optimizer, trajectories, advantages, tc, temperature=cfg.engine.sampling.temperature)
            scheduler.step()
            updated = time.perf_counter()
            # --- log ---------------------------------------------------------------------------------
            episodes = episode_stats(trajectories)
            metrics = StepMetrics.join(
                step, episodes, update, lr=lr, search_penalty=search_penalty, step_time_s=updated - began,
                rollout_time_s=rolled - began, update_time_s=updated - rolled,
            )
            log.write(metrics)
            if tc.save_trajectories:
                _save_trajectories(trajectories, out, step)
            advance(status=f"reward {episodes.reward:.3f}  acc {episodes.accuracy:.3f}  search {episodes.search_ratio:.2f}")
            # --- checkpoint --------------------------------------------------------------------------
            if step % tc.checkpoint_every == 0 or step == tc.steps:
                state = TrainerState(step, optimizer.state_dict(), scheduler.state_dict(), sampler.state_dict(), rng_state())
                save_checkpoint(out, policy, state, config_to_toml(cfg), tc.keep_checkpoints)
    log.close()
    with quiet_transformers():
        return policy.save(out / FINAL_POLICY)


def step_seed(seed: int, step: int) -> int:
    """The rollout seed of a step: a pure function of the run seed and the step, so resume repeats it.

    >>> step_seed(0, 1) != step_seed(0, 2) != step_seed(1, 1)
    True
    """
    return (seed * 1_000_003 + step * 7_919) % (2**31 - 1)


# --- setup helpers -----------------------------------------------------------------------------------


def _resume_point(out: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from (None for a fresh start); a run with checkpoints is never overwritten.

    A run killed before its first checkpoint left nothing to resume: a fresh start replaces its metrics.
    """
    checkpoint = latest_checkpoint(out)
    if resume and checkpoint is None:
        raise ConfigError(f"--resume was given but {out} holds no checkpoint; start the run without --resume.")
    if not resume and checkpoint is not None:
        raise ConfigError(f"{out} already holds a training run; pass --resume to continue it, or set out_dir to a new folder.")
    if not resume:
        truncate_metrics(out / "metrics.jsonl", 0)
    return checkpoint


def _training_samples(cfg) -> list["VQASample"]:
    from mmsearch_r1.data import read_parquet

    path = cfg.train.data
    if path is None:
        raise ConfigError("train.data is not set; point it at a training Parquet file, e.g. --set train.data=worlds/demo/train.parquet.")
    existing_file(path, "training data", "build the world first (`mmsearch-r1 world build`) or fix train.data.", ConfigError)
    samples = read_parquet(path)
    if not samples:
        raise ConfigError(f"training data {path} holds no samples; point train.data at a non-empty Parquet file.")
    return samples


def _load_or_build_policy(cfg, out: Path, checkpoint: Path | None, samples: Sequence["VQASample"]) -> "Policy":
    """The checkpoint's policy on resume; else ``model.path``; else a fresh tiny model (saved as the reference)."""
    from mmsearch_r1.models import load_policy

    if checkpoint is not None:
        return load_policy(checkpoint / "policy", device=cfg.train.device)
    if cfg.model.path is not None:
        return load_policy(cfg.model.path, device=cfg.train.device)
    policy = _fresh_tiny_policy(cfg, samples)
    policy.save(out / INITIAL_POLICY)
    return policy


def _fresh_tiny_policy(cfg, samples: Sequence["VQASample"]) -> "Policy":
    from mmsearch_r1.models import build_tiny_policy, build_tokenizer

    texts = [s.question for s in samples] + [a for s in samples for a in s.answers]
    policy = build_tiny_policy(cfg.model, build_tokenizer(texts, vocab_size=cfg.model.vocab_size), seed=cfg.seed)
    policy.model.to(cfg.train.device)
    return policy


def _reference_policy(cfg, out: Path) -> "Policy":
    """The frozen policy the KL term pulls towards: the run's starting point."""
    from mmsearch_r1.models import load_policy

    path = cfg.model.path if cfg.model.path is not None else out / INITIAL_POLICY
    reference = load_policy(path, device=cfg.train.device)
    reference.model.requires_grad_(False)
    return reference


def _engine(cfg, policy: "Policy"):
    """A Hugging Face engine that samples from the very model being trained (no weight copies)."""
    from mmsearch_r1.engines.hf import HFEngine

    if cfg.engine.type != "hf":
        raise ConfigError(f"the built-in trainer samples with the hf engine, not {cfg.engine.type!r}; set engine.type=hf (use the veRL plug-in for vLLM).")
    return HFEngine(policy, canonical_tokens=cfg.engine.canonical_tokens, kv_cache=cfg.engine.kv_cache)


def _toolbox(cfg) -> "Toolbox":
    """The configured tools behind the search cache; the direct workflow offers none."""
    from mmsearch_r1.tools import build_toolbox

    needed = cfg.train.workflow != "direct"
    return build_toolbox(cfg.tools, image=needed, text=needed)


def _optimizer(policy: "Policy", tc: "TrainConfig"):
    import torch

    params = [p for p in policy.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tc.lr, betas=tc.adam_betas, weight_decay=tc.weight_decay)
    warmup = tc.lr_warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup) if warmup else 1.0)
    return optimizer, scheduler


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --- score -------------------------------------------------------------------------------------------


def _score_all(trajectories: Sequence["Trajectory"], reward_cfg, search_penalty: float) -> None:
    """Set each trajectory's reward breakdown (the search penalty is the one in force at this step)."""
    from mmsearch_r1.reward import score

    for t in trajectories:
        t.reward = score(
            t.assistant_turns, t.gold_answers, format_weight=reward_cfg.format_weight,
            search_penalty=search_penalty, match=reward_cfg.match, per_search_penalty=reward_cfg.per_search_penalty,
        )


# --- update ------------------------------------------------------------------------------------------


def policy_update(policy: "Policy", reference: "Policy | None", optimizer, trajectories: Sequence["Trajectory"],
                  advantages: "torch.Tensor", tc: "TrainConfig", *, temperature: float = 1.0) -> UpdateStats:
    """Clipped policy-gradient steps on one step's episodes; returns token-mean loss parts and the grad norm.

    With one pass and one mini-batch the old log-probs are the current ones (detached, ratio 1, as in veRL's
    on-policy case); otherwise they are recomputed once before the first pass. Log-probs are under the
    rollout's sampling ``temperature``.
    """
    import torch

    from mmsearch_r1.train.grpo import grpo_loss

    masks = _pad([torch.tensor(t.loss_mask, dtype=torch.float32) for t in trajectories])
    device = next(policy.model.parameters()).device
    masks, advantages = masks.to(device), advantages.to(device)
    on_policy = tc.ppo_epochs == 1 and tc.mini_batches == 1
    old = None if on_policy else _logprobs(policy, trajectories, tc.micro_batch_size, device, temperature)
    ref = _logprobs(reference, trajectories, tc.micro_batch_size, device, temperature) if reference is not None else None
    parts = {"policy_loss": 0.0, "kl": 0.0, "entropy": 0.0, "clip_fraction": 0.0}
    grad_norm, n_updates = 0.0, 0
    for _ in range(tc.ppo_epochs):
        for mini in _chunks(list(range(len(trajectories))), tc.mini_batches, by_count=True):
            token_count = float(masks[mini].sum().clamp(min=1.0))
            optimizer.zero_grad(set_to_none=True)
            for micro in _chunks(_by_length(mini, trajectories), tc.micro_batch_size):
                logprobs = _pad(_trajectory_logprobs(policy, [trajectories[i] for i in micro], temperature), like=masks).to(device)
                out = grpo_loss(
                    logprobs, logprobs.detach() if on_policy else old[micro], ref[micro] if ref is not None else None,
                    advantages[micro], masks[micro], clip_ratio=tc.clip_ratio, clip_ratio_high=tc.clip_ratio_high,
                    kl_coef=tc.kl_coef, token_count=token_count,
                )
                out.loss.backward()
                for key in parts:
                    parts[key] += getattr(out, key)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(policy.model.parameters(), tc.max_grad_norm))
            optimizer.step()
            n_updates += 1
    return UpdateStats(**{k: v / n_updates for k, v in parts.items()}, grad_norm=grad_norm)


def _trajectory_logprobs(policy: "Policy", trajectories: Sequence["Trajectory"], temperature: float) -> list["torch.Tensor"]:
    """Log-probs of the sampled tokens (0 elsewhere: the loss masks them out)."""
    from mmsearch_r1.engines.hf import trajectory_logprobs

    return trajectory_logprobs(policy, list(trajectories), temperature, sampled_only=True)


def _logprobs(policy: "Policy", trajectories: Sequence["Trajectory"], micro_batch_size: int, device, temperature: float) -> "torch.Tensor":
    """Log-probs ``[B, T]`` of every trajectory under ``policy`` without gradients, in micro-batches."""
    import torch

    rows: list[torch.Tensor | None] = [None] * len(trajectories)
    with torch.no_grad():
        for micro in _chunks(_by_length(list(range(len(trajectories))), trajectories), micro_batch_size):
            for i, row in zip(micro, _trajectory_logprobs(policy, [trajectories[i] for i in micro], temperature)):
                rows[i] = row
    return _pad(rows).to(device)


def _pad(rows: Sequence["torch.Tensor"], like: "torch.Tensor | None" = None) -> "torch.Tensor":
    """Right-pad 1-D tensors with zeros into ``[B, T]`` (``T`` the longest row, or ``like``'s width)."""
    import torch

    width = like.shape[1] if like is not None else max(len(r) for r in rows)
    out = torch.zeros(len(rows), width, dtype=rows[0].dtype, device=rows[0].device)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def _by_length(indices: list[int], trajectories: Sequence["Trajectory"]) -> list[int]:
    """``indices`` longest trajectory first, so that micro-batches pad each episode to a similar length.

    The loss is a token mean over the whole mini-batch, so how its episodes are grouped into micro-batches
    changes only the padding and the order of the sums (bench/train_update.py measures the speed-up).
    """
    return sorted(indices, key=lambda i: -len(trajectories[i].token_ids))


def _chunks(items: list[int], size: int, *, by_count: bool = False) -> list[list[int]]:
    """Split ``items`` into pieces of ``size`` items, or into ``size`` near-equal pieces when ``by_count``.

    >>> _chunks([0, 1, 2, 3, 4], 2), _chunks([0, 1, 2, 3, 4], 2, by_count=True)
    ([[0, 1], [2, 3], [4]], [[0, 1, 2], [3, 4]])
    """
    if by_count:
        count = min(size, len(items))
        step = -(-len(items) // count)
        return [items[i: i + step] for i in range(0, len(items), step)]
    return [items[i: i + size] for i in range(0, len(items), size)]


# --- log ---------------------------------------------------------------------------------------------


def _save_trajectories(trajectories: Sequence["Trajectory"], out: Path, step: int) -> None:
    from mmsearch_r1.trajectory import write_jsonl

    folder = out / "trajectories"
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(trajectories, folder / f"step_{step:06d}.jsonl")
