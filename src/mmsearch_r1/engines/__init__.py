"""Generation engines: the ``Engine`` seam and its backends (Hugging Face, OpenAI-compatible HTTP, vLLM).

``build_engine(engine_cfg, model_cfg)`` picks the backend from ``engine_cfg.type``. Backends import their
heavy dependencies (torch, transformers, httpx, vllm) only when built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mmsearch_r1.engines.base import Engine
    from mmsearch_r1.engines.config import EngineConfig
    from mmsearch_r1.models.config import ModelConfig

__all__ = ["build_engine", "check_engine"]


def check_engine(engine_cfg: "EngineConfig", model_cfg: "ModelConfig") -> None:
    """Raise the ConfigError ``build_engine`` would for settings that need nothing loaded to judge (no model
    folder, for the hf engine one without a checkpoint, a device torch cannot use), so that a command can
    refuse them before slower work."""
    from mmsearch_r1.errors import ConfigError

    if engine_cfg.type == "openai":
        return
    if model_cfg.path is None:
        raise ConfigError(f"the {engine_cfg.type} engine needs a model folder; set model.path (or pass --model DIR).")
    if engine_cfg.type == "hf":
        from mmsearch_r1.models.policy import require_device, require_policy_folder

        require_device(engine_cfg.device, "engine.device")
        require_policy_folder(model_cfg.path)


def build_engine(engine_cfg: "EngineConfig", model_cfg: "ModelConfig") -> "Engine":
    """The engine ``engine_cfg.type`` names, serving the model at ``model_cfg.path`` (hf, vllm) or a server (openai)."""
    from mmsearch_r1.errors import ConfigError

    check_engine(engine_cfg, model_cfg)
    if engine_cfg.type == "openai":
        from mmsearch_r1.engines.openai import OpenAIEngine

        return OpenAIEngine(engine_cfg.openai)
    if engine_cfg.type == "hf":
        from mmsearch_r1.engines.hf import HFEngine
        from mmsearch_r1.models import load_policy

        policy = load_policy(model_cfg.path, device=engine_cfg.device, dtype=engine_cfg.dtype)
        return HFEngine(policy, canonical_tokens=engine_cfg.canonical_tokens, kv_cache=engine_cfg.kv_cache)
    if engine_cfg.type == "vllm":
        from mmsearch_r1.engines.vllm import VLLMEngine

        return VLLMEngine(model_cfg.path, engine_cfg)
    raise ConfigError(f"engine.type `{engine_cfg.type}` is unknown; use hf, vllm or openai.")
