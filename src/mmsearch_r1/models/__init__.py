"""The policy model: a tiny Qwen2.5-VL built offline, the loader shared with real checkpoints, pretraining.

Every name loads on first use: heavy modules (torch, transformers) stay out of ``import mmsearch_r1``.
"""

__all__ = [
    "ModelConfig", "Policy", "PretrainConfig", "build_processor", "build_tiny_policy", "build_tokenizer", "load_policy",
]

_LAZY = {
    "ModelConfig": "mmsearch_r1.models.config",
    "PretrainConfig": "mmsearch_r1.models.config",
    "Policy": "mmsearch_r1.models.policy",
    "build_processor": "mmsearch_r1.models.policy",
    "build_tiny_policy": "mmsearch_r1.models.policy",
    "load_policy": "mmsearch_r1.models.policy",
    "build_tokenizer": "mmsearch_r1.models.tokenizer",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib


        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
