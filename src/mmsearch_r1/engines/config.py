"""Config of the generation engine and its sampling parameters."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mmsearch_r1.config import DEVICE_PATTERN, Section


class SamplingConfig(Section):
    """How each assistant turn is sampled."""

    temperature: float = Field(1.0, ge=0.0, le=5.0, description="Sampling temperature; 0 means greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_new_tokens: int = Field(256, ge=1, le=32768, description="Most tokens in one assistant turn.")


class OpenAIEngineConfig(Section):
    """An OpenAI-compatible chat-completions server (vLLM serve, SGLang, a hosted API)."""

    base_url: str = Field("http://127.0.0.1:8000/v1", min_length=1, description="Server URL up to and including /v1.")
    model_name: str = Field("", description="Model name the server knows; empty asks the server's /models for its first one.")
    api_key_env: str = Field("OPENAI_API_KEY", min_length=1, description="Environment variable holding the API key (unset: no key sent).")
    max_concurrency: int = Field(16, ge=1, le=1024, description="Most requests in flight at once.")
    max_retries: int = Field(3, ge=0, le=20, description="Retries of a request after a timeout, HTTP 429 or 5xx, with exponential backoff.")
    timeout_s: float = Field(120.0, gt=0.0, le=3600.0, description="Seconds to wait for one response.")
    backoff_s: float = Field(1.0, ge=0.0, le=60.0, description="First retry delay; doubles with each retry.")
    logprobs: bool = Field(False, description="Ask the server for the log-probs of sampled tokens.")


class VLLMEngineConfig(Section):
    """vLLM in-process on a GPU (needs the `gpu` extra)."""

    gpu_memory_utilization: float = Field(0.8, gt=0.0, le=1.0, description="Share of GPU memory vLLM may take.")
    max_model_len: int = Field(8192, ge=256, le=1_048_576, description="Longest context (prompt + turns) vLLM plans for.")
    tensor_parallel_size: int = Field(1, ge=1, le=64, description="GPUs one model is split over.")
    max_images_per_prompt: int = Field(8, ge=1, le=64, description="Most images in one context (question image + thumbnails).")


class EngineConfig(Section):
    """Which engine generates assistant turns."""

    type: Literal["hf", "vllm", "openai"] = Field("hf", description="hf: transformers; vllm: vLLM on a GPU; openai: any OpenAI-compatible server.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Sampling parameters.")
    device: str = Field("cpu", pattern=DEVICE_PATTERN, description="Device of the hf engine's model: cpu or cuda[:i].")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = Field(None, description="Model dtype; None: float32 on CPU, the checkpoint's own elsewhere.")
    canonical_tokens: bool = Field(True, description="Keep a turn as the canonical ids of its text when the model sampled another spelling (so messages re-encode to token_ids exactly).")
    kv_cache: bool = Field(True, description="hf engine: keep each episode's KV cache between turns, so a turn prefills only its new tokens (false: one generate call over the whole context per turn).")
    openai: OpenAIEngineConfig = Field(default_factory=OpenAIEngineConfig, description="The OpenAI-compatible server.")
    vllm: VLLMEngineConfig = Field(default_factory=VLLMEngineConfig, description="The in-process vLLM engine.")
