"""The vLLM engine on a GPU: a tiny Qwen2.5-VL saved to disk, rolled out through vLLM (skipped without CUDA/vLLM)."""

from __future__ import annotations

import io

import pytest

torch = pytest.importorskip("torch")

from mmsearch_r1.config import ProtocolConfig  # noqa: E402
from mmsearch_r1.engines.base import EngineError  # noqa: E402
from mmsearch_r1.engines.config import EngineConfig, SamplingConfig  # noqa: E402


def test_building_without_vllm_is_a_clear_error(tmp_path):
    try:
        import vllm  # noqa: F401
    except ImportError:
        from mmsearch_r1.engines.vllm import VLLMEngine

        with pytest.raises(EngineError, match="gpu extra"):
            VLLMEngine(tmp_path, EngineConfig(type="vllm"))
    else:
        pytest.skip("vLLM is installed here")


@pytest.mark.gpu
def test_vllm_rollout_records_tokens_that_reencode(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    pytest.importorskip("vllm")
    from PIL import Image

    from mmsearch_r1.data import VQASample
    from mmsearch_r1.engines.vllm import VLLMEngine
    from mmsearch_r1.models import ModelConfig, build_tiny_policy, build_tokenizer
    from mmsearch_r1.rollout import rollout

    tokenizer = build_tokenizer(["The red guild comes from Quux."] * 5, vocab_size=500)
    cfg = ModelConfig(hidden_size=256, num_heads=4, num_kv_heads=2, intermediate_size=512, num_layers=2, vision_hidden_size=128, vision_heads=2)
    policy = build_tiny_policy(cfg, tokenizer)
    policy.save(tmp_path / "policy")
    engine = VLLMEngine(tmp_path / "policy", EngineConfig(type="vllm", vllm={"gpu_memory_utilization": 0.3, "max_model_len": 2048}))
    buffer = io.BytesIO()
    Image.new("RGB", (56, 56), "red").save(buffer, format="PNG")
    samples = [VQASample(f"q{i}", "Where is it from?", buffer.getvalue(), ["Quux"]) for i in range(4)]
    out = rollout(samples, engine, None, n=2, protocol=ProtocolConfig(), sampling=SamplingConfig(max_new_tokens=16), seed=0)
    assert len(out) == 8
    for t in out:
        assert len(t.token_ids) == len(t.loss_mask) == len(t.logprobs) and sum(t.loss_mask) > 0
        text = policy.processor.apply_chat_template([m.to_chat() for m in t.messages], tokenize=False)
        text = text[: text.rindex("<|im_end|>") + len("<|im_end|>")]
        assert policy.processor(text=[text], images=t.images, add_special_tokens=False)["input_ids"][0] == t.token_ids
