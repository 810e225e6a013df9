"""Config of the policy model (tiny or real Qwen2.5-VL) and of its supervised pretraining."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from mmsearch_r1.config import Section


class ModelConfig(Section):
    """The policy model: a checkpoint folder, or the sizes of a tiny model built from scratch."""

    path: Path | None = Field(None, description="Checkpoint folder in Hugging Face layout (tiny or real Qwen2.5-VL).")


class PretrainConfig(Section):
    """Supervised pretraining that gives the tiny model partial knowledge and the protocol."""

    lr: float = Field(3e-3, gt=0, le=1, description="Peak learning rate.")
