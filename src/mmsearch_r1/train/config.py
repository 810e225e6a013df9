"""Config of GRPO training.

Defaults follow the published MMSearch-R1 recipe where it applies (veRL GRPO: lr 2e-6, KL coefficient
0.001 with the low-variance estimator added to the loss, clip 0.2, no entropy bonus, one optimizer step per
batch, temperature 1.0; reward weights live in ``reward``). ``configs/demo.toml`` scales the group size,
batch and learning rate for the tiny CPU model; ``docs/training.md`` lists each difference and why.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from mmsearch_r1.config import DEVICE_PATTERN, Section


class TrainConfig(Section):
    """The GRPO trainer (published recipe where it applies)."""

    # How a run goes, not what it makes: left out of the demo's stage fingerprints.
    RUN_ONLY: ClassVar[frozenset[str]] = frozenset({"progress", "threads", "checkpoint_every", "keep_checkpoints", "save_trajectories", "tensorboard", "wandb", "wandb_project"})

    data: Path | None = Field(None, description="Training Parquet file (veRL/FVQA layout); None uses <world.dir>/train.parquet.")
    steps: int = Field(100, ge=1, le=1_000_000, description="Training steps (one rollout batch and its policy update each).")
    prompts_per_step: int = Field(32, ge=1, le=65536, description="Prompts sampled per step (the published train_batch_size).")
    group_size: int = Field(4, ge=2, le=256, description="Episodes rolled out per prompt (GRPO group, rollout.n).")
    workflow: Literal["on_demand", "direct", "rag"] = Field("on_demand", description="Rollout workflow used while training.")
    lr: float = Field(2e-6, gt=0, le=1, description="Peak learning rate (AdamW).")
    lr_warmup_steps: int = Field(0, ge=0, le=1_000_000, description="Linear learning-rate warm-up steps, then constant.")
    weight_decay: float = Field(0.01, ge=0.0, le=1.0, description="AdamW weight decay.")
    adam_betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    max_grad_norm: float = Field(1.0, gt=0.0, le=1000.0, description="Gradient norm clip per optimizer step.")
    kl_coef: float = Field(0.001, ge=0, le=10.0, description="Weight β of the k3 KL term to the frozen reference (0 drops the reference).")
    clip_ratio: float = Field(0.2, gt=0, le=1, description="PPO clip range ε.")
    clip_ratio_high: float | None = Field(None, gt=0, le=10, description="Upper clip range (DAPO clip-higher); None uses clip_ratio.")
    normalize_std: bool = Field(True, description="Divide group-centred rewards by the group std (False: mean-only, Dr. GRPO).")
    ppo_epochs: int = Field(1, ge=1, le=64, description="Passes over each step's episodes.")
    mini_batches: int = Field(1, ge=1, le=1024, description="Optimizer steps per pass (the step's episodes split evenly).")
    micro_batch_size: int = Field(8, ge=1, le=4096, description="Episodes per forward/backward (gradient accumulation).")
    checkpoint_every: int = Field(10, ge=1, le=1_000_000, description="Steps between resumable checkpoints (the last step always saves).")
    keep_checkpoints: int = Field(2, ge=1, le=1000, description="Newest checkpoints kept on disk.")
    threads: int = Field(2, ge=1, le=256, description="CPU threads torch may use (fixed, for reproducible numbers).")
    device: str = Field("cpu", pattern=DEVICE_PATTERN, description="Where the policy trains: cpu or cuda[:i].")
    progress: bool = Field(True, description="Show a live progress bar.")
    save_trajectories: bool = Field(False, description="Write every step's episodes to <out_dir>/trajectories/step_N.jsonl.")
    tensorboard: bool = Field(False, description="Also log metrics to TensorBoard under <out_dir>/tensorboard (needs tensorboard).")
    wandb: bool = Field(False, description="Also log metrics to Weights & Biases (needs wandb; key from WANDB_API_KEY).")
    wandb_project: str = Field("mmsearch-r1", min_length=1, description="Weights & Biases project name.")
