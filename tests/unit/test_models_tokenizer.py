"""The tiny policy's tokenizer and config: protocol tags are single plain-text tokens, chat template is Qwen-style."""

import pytest

from mmsearch_r1.config import load_config
from mmsearch_r1.errors import ConfigError
from mmsearch_r1.models.tokenizer import CHAT_SPECIAL_TOKENS, PROTOCOL_TOKENS, build_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(["Zorblat is a red bird. The color of Zorblat is red. Quixo lives in Farn."] * 30, vocab_size=500)


def test_protocol_tags_are_single_non_special_tokens(tokenizer):
    for tag in PROTOCOL_TOKENS:
        assert tokenizer.tokenize(f"x{tag}y") == ["x", tag, "y"]
        assert tag not in tokenizer.all_special_tokens
    turn = "<reason>This is Zorblat.</reason><answer>red</answer>"
    ids = tokenizer(turn)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == turn


def test_chat_special_tokens_are_single_ids(tokenizer):
    ids = [tokenizer.convert_tokens_to_ids(t) for t in CHAT_SPECIAL_TOKENS]
    assert len(set(ids)) == len(CHAT_SPECIAL_TOKENS)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert tokenizer.decode(tokenizer("<|im_end|>")["input_ids"], skip_special_tokens=True) == ""


def test_world_words_get_merges(tokenizer):
    assert len(tokenizer.tokenize("Zorblat")) <= 2
    assert len(tokenizer.tokenize("Zorblat")) < len("Zorblat")


def test_chat_template_renders_images_as_vision_placeholders(tokenizer):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "<reason>r</reason><answer>red</answer>"}]},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What colour?<|im_end|>\n"
        "<|im_start|>assistant\n<reason>r</reason><answer>red</answer><|im_end|>\n"
    )
    prompt = tokenizer.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")


def test_model_config_bounds_are_enforced():
    cfg = load_config(None, ["model.hidden_size=96", "model.image_size=84"])
    assert cfg.model.hidden_size == 96 and cfg.model.image_size == 84
    with pytest.raises(ConfigError, match="model.num_layers"):
        load_config(None, ["model.num_layers=0"])
    with pytest.raises(ConfigError, match="pretrain.direct_prob"):
        load_config(None, ["pretrain.direct_prob=1.5"])
