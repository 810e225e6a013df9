"""Config of evaluation: the workflows, how answers are scored, and the reports."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from mmsearch_r1.config import Section
from mmsearch_r1.protocol import WORKFLOWS, Workflow


class JudgeConfig(Section):
    """An LLM judge behind an OpenAI-compatible endpoint (used when ``eval.match = "judge"``)."""

    base_url: str = Field("http://127.0.0.1:8000/v1", description="OpenAI-compatible API root; /chat/completions is appended.")
    model: str = Field("gpt-4o-mini", min_length=1, description="Model name sent to the judge endpoint.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the judge's API key (unset: no key is sent).")
    timeout_s: float = Field(60.0, gt=0.0, le=3600.0, description="Seconds to wait for one judge reply.")
    max_retries: int = Field(3, ge=0, le=20, description="Retries after a timeout, HTTP 429 or 5xx, with exponential backoff.")
    concurrency: int = Field(4, ge=1, le=64, description="Judge requests in flight at once.")
    cache_dir: Path | None = Field(None, description="Folder of cached verdicts; None puts it at <out>/judge_cache.")
    prompt_file: Path | None = Field(None, description="Text file replacing the built-in judging prompt (fields: {question}, {answers}, {prediction}).")


class EvalConfig(Section):
    """The evaluation workflows and their scoring."""

    match: Literal["em", "subem", "judge"] = Field("subem", description="Accuracy rule: exact match, substring match, or an LLM judge.")
    workflows: list[Workflow] = Field(default_factory=lambda: list(WORKFLOWS), min_length=1, description="Workflows to run: direct, rag, on_demand.")
    greedy: bool = Field(True, description="Decode greedily (temperature 0); false samples with engine.sampling.")
    batch_size: int = Field(16, ge=1, le=4096, description="Samples per rollout call; finished batches are saved, so a restart loses at most one.")
    limit: int | None = Field(None, ge=1, description="Evaluate at most this many samples of each data file (None: all).")
    bootstrap_samples: int = Field(1000, ge=0, le=100_000, description="Bootstrap resamples for confidence intervals (0: no intervals).")
    ci_level: float = Field(0.95, gt=0.0, lt=1.0, description="Coverage of the bootstrap confidence intervals.")
    viewer_max: int = Field(300, ge=0, le=100_000, description="Most trajectories per data file and workflow shown in the HTML viewer.")
    viewer_image_px: int = Field(192, ge=16, le=2048, description="Longest side of images embedded in the viewer, in pixels.")
    judge: JudgeConfig = Field(default_factory=JudgeConfig, description="The LLM judge.")
