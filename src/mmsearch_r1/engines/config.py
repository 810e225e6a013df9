"""Config of the generation engine and its sampling parameters."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mmsearch_r1.config import Section


class SamplingConfig(Section):
    """How each assistant turn is sampled."""

    temperature: float = Field(1.0, ge=0.0, le=5.0, description="Sampling temperature; 0 means greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_new_tokens: int = Field(256, ge=1, le=32768, description="Most tokens in one assistant turn.")


class EngineConfig(Section):
    """Which engine generates assistant turns."""

    type: Literal["hf", "vllm", "openai"] = Field("hf", description="hf: transformers; vllm: vLLM on a GPU; openai: any OpenAI-compatible server.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Sampling parameters.")
