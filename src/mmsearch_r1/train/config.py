"""Config of GRPO training."""

from __future__ import annotations

from pydantic import Field

from mmsearch_r1.config import Section


class TrainConfig(Section):
    """The GRPO trainer (published recipe where it applies)."""

    lr: float = Field(1e-6, gt=0, le=1, description="Learning rate.")
    kl_coef: float = Field(0.001, ge=0, description="Weight of the KL term to the frozen reference.")
    clip_ratio: float = Field(0.2, gt=0, le=1, description="PPO clip range ε.")
