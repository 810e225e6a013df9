"""Engine parts without a model: log-prob math, turn cutting, chat spans, request bodies, config, factory."""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from mmsearch_r1.config import load_config
from mmsearch_r1.engines import build_engine
from mmsearch_r1.engines.base import Context
from mmsearch_r1.engines.chat import ChatEncoder
from mmsearch_r1.engines.config import EngineConfig, SamplingConfig
from mmsearch_r1.engines.hf import cut_at_end_of_turn, token_logprobs
from mmsearch_r1.engines.openai import chat_messages
from mmsearch_r1.errors import ConfigError
from mmsearch_r1.models import ModelConfig
from mmsearch_r1.trajectory import ImageRef, Message


def test_token_logprobs_hand_computed():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])  # [2 positions, vocab 3]
    tokens = torch.tensor([0, 2])
    expected = [2 - math.log(math.exp(2) + 2), -math.log(3)]
    assert torch.allclose(token_logprobs(logits, tokens), torch.tensor(expected))
    # temperature 2 halves the logits: p(0) = e / (e + 2)
    assert torch.allclose(token_logprobs(logits, tokens, temperature=2.0)[0], torch.tensor(1 - math.log(math.e + 2)))
    # greedy scores under temperature 1
    assert torch.equal(token_logprobs(logits, tokens, temperature=0.0), token_logprobs(logits, tokens))
    # a suppressed token leaves the normalisation: p(2 | pos 1) = 1/2
    assert torch.allclose(token_logprobs(logits, tokens, suppressed_ids=[1])[1], torch.tensor(-math.log(2)))


def test_token_logprobs_keeps_batch_shape_and_gradient():
    logits = torch.randn(2, 5, 7, requires_grad=True)
    out = token_logprobs(logits, torch.randint(0, 7, (2, 5)))
    assert out.shape == (2, 5) and (out <= 0).all()
    out.sum().backward()
    assert logits.grad is not None


def test_cut_at_end_of_turn():
    assert cut_at_end_of_turn([4, 9, 2, 9, 2], 2) == ([4, 9, 2], True)
    assert cut_at_end_of_turn([4, 9], 2) == ([4, 9], False)
    assert cut_at_end_of_turn([2], 2) == ([2], True)


@pytest.fixture(scope="module")
def encoder():
    from mmsearch_r1.models import build_tokenizer
    from mmsearch_r1.models.policy import build_processor, tiny_image_settings

    tokenizer = build_tokenizer(["Zorblat is a red tower."] * 5, vocab_size=400)
    return ChatEncoder(build_processor(tokenizer, tiny_image_settings(ModelConfig())))


def test_given_span_starts_after_the_end_of_turn_and_ends_with_the_generation_prompt(encoder):
    tok = encoder.tokenizer
    before = [Message("user", ["Q?"]), Message("assistant", ["<reason>r</reason><search><img></search>"])]
    span = encoder.given_span(before, [Message("user", ["<information>\nnone\n</information>"])], [])
    text = tok.decode(span.token_ids)
    assert text.startswith("\n<|im_start|>user\n") and text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert span.pixel_values == []


def test_spans_concatenate_to_the_chat_template(encoder):
    tok = encoder.tokenizer
    opening = [Message("system", ["Be brief."]), Message("user", [ImageRef(0), "What is it?"])]
    image = Image.new("RGB", (56, 56), "red")
    first = encoder.given_span([], opening, [image])
    turn = encoder.assistant_span(opening, "<reason>r</reason><answer>x</answer>")
    assert turn[-1] == encoder.end_of_turn_id
    messages = [*opening, Message("assistant", ["<reason>r</reason><answer>x</answer>"])]
    full = encoder.render(messages, generation_prompt=False)
    whole = encoder.encode_text(full[: full.rindex("<|im_end|>") + len("<|im_end|>")], [image])
    assert first.token_ids + turn == whole.token_ids
    assert first.token_ids.count(encoder.image_token_id) == int(first.image_grid_thw[0].prod()) // 4
    assert len(first.pixel_values) == 1 and torch.equal(first.pixel_values[0], whole.pixel_values[0])
    assert tok.decode(turn[-1:]) == "<|im_end|>"


def test_only_the_end_of_turn_special_token_may_be_sampled(encoder):
    special = {i for i, t in encoder.tokenizer.added_tokens_decoder.items() if t.special}
    assert encoder.end_of_turn_id not in encoder.suppressed_ids
    assert set(encoder.suppressed_ids) == special - {encoder.end_of_turn_id}
    assert encoder.image_token_id in encoder.suppressed_ids
    reason = encoder.tokenizer.convert_tokens_to_ids("<reason>")
    assert reason not in encoder.suppressed_ids  # protocol tags are plain text


def test_chat_messages_keep_image_order_and_reuse_data_urls():
    red, blue = Image.new("RGB", (4, 4), "red"), Image.new("RGB", (4, 4), "blue")
    context = Context([Message("user", [ImageRef(0), "Q", ImageRef(1), ImageRef(0)])], [red, blue])
    urls: dict[int, str] = {}
    [message] = chat_messages(context, urls)
    kinds = [p["type"] for p in message["content"]]
    assert kinds == ["image_url", "text", "image_url", "image_url"]
    assert message["content"][0] == message["content"][3] != message["content"][2]
    assert len(urls) == 2


def test_engine_config_bounds_and_defaults():
    cfg = load_config(None, ["engine.type=openai", "engine.openai.max_concurrency=4", "engine.sampling.temperature=0.5"])
    assert (cfg.engine.type, cfg.engine.openai.max_concurrency, cfg.engine.sampling.temperature) == ("openai", 4, 0.5)
    assert cfg.engine.canonical_tokens is True
    with pytest.raises(ConfigError, match="engine.openai.max_concurrency"):
        load_config(None, ["engine.openai.max_concurrency=0"])
    with pytest.raises(ConfigError, match="engine.type"):
        load_config(None, ["engine.type=tgi"])


def test_build_engine_needs_a_model_folder_for_local_engines():
    with pytest.raises(ConfigError, match="model.path"):
        build_engine(EngineConfig(type="hf"), ModelConfig())
    engine = build_engine(EngineConfig(type="openai"), ModelConfig())
    assert engine.encoder is None and engine.generate([], SamplingConfig()) == []
