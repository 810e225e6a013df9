"""The vLLM engine's side of the seam, on a CPU: what it hands vLLM and how it reads vLLM's answers.

A stand-in ``vllm`` module (``LLM``, ``SamplingParams``, ``EngineArgs``, shaped as vLLM's offline API) records
every call and replies with scripted completions; the engine, its processor and the rollout around it are the
real ones. What vLLM itself does with the inputs is checked by the ``gpu``-marked test in test_engines_vllm.py.
"""

from __future__ import annotations

import dataclasses
import io
import sys
import types
from dataclasses import dataclass

import pytest
from PIL import Image

from mmsearch_r1.config import ProtocolConfig
from mmsearch_r1.data import VQASample
from mmsearch_r1.engines.config import EngineConfig, SamplingConfig
from mmsearch_r1.rollout import rollout
from mmsearch_r1.tools.base import ImageHit, ImageSearch, Toolbox

SEARCH = "<reason>Unknown.</reason><search><img></search>"
ANSWER = "<reason>The pages say Quux.</reason><answer>Quux</answer>"


@dataclass
class Logprob:
    logprob: float


@dataclass
class Completion:
    token_ids: list[int]
    logprobs: list[dict] | None


@dataclass
class RequestOutput:
    outputs: list[Completion]
    prompt_logprobs: list | None = None


@dataclass
class SamplingParams:
    """The fields of vLLM's ``SamplingParams`` the engine sets (an unknown one is a TypeError, as in vLLM)."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = 16
    stop_token_ids: list[int] | None = None
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    seed: int | None = None
    skip_special_tokens: bool = True
    logit_bias: dict[int, float] | None = None


LLM_OPTIONS = {"model", "gpu_memory_utilization", "max_model_len", "tensor_parallel_size", "limit_mm_per_prompt", "dtype", "logprobs_mode"}


class FakeLLM:
    """Replies to each prompt with ``reply(prompt_ids, images)`` -> token ids; records every call."""

    instances: list["FakeLLM"] = []

    def __init__(self, **options):
        assert set(options) <= LLM_OPTIONS, set(options) - LLM_OPTIONS  # names vLLM's LLM / EngineArgs take
        self.options, self.calls = options, []
        self.reply = None
        FakeLLM.instances.append(self)

    def generate(self, prompts, params, use_tqdm=True):
        self.calls.append((prompts, params))
        if isinstance(params, SamplingParams):  # one params for all: prompt scoring
            return [RequestOutput([Completion([7], None)], [None] + [{t: Logprob(-0.01 * i)} for i, t in enumerate(p["prompt_token_ids"][1:], 1)])
                    for p in prompts]
        outs = []
        for prompt, param in zip(prompts, params):
            ids = self.reply(prompt["prompt_token_ids"], prompt["multi_modal_data"]["image"])[: param.max_tokens]
            outs.append(RequestOutput([Completion(ids, [{t: Logprob(-0.1 * (i + 1))} for i, t in enumerate(ids)])]))
        return outs


def _install_fake_vllm(monkeypatch, *, logprobs_mode: bool = True) -> None:
    fields = [("model", str, "")] + ([("logprobs_mode", str, "raw_logprobs")] if logprobs_mode else [])
    engine_args = dataclasses.make_dataclass("EngineArgs", [(name, kind, dataclasses.field(default=d)) for name, kind, d in fields])
    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = FakeLLM, SamplingParams
    engine_pkg, arg_utils = types.ModuleType("vllm.engine"), types.ModuleType("vllm.engine.arg_utils")
    arg_utils.EngineArgs = engine_args
    for name, module in {"vllm": vllm, "vllm.engine": engine_pkg, "vllm.engine.arg_utils": arg_utils}.items():
        monkeypatch.setitem(sys.modules, name, module)
    FakeLLM.instances.clear()


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    from mmsearch_r1.models import ModelConfig, build_tiny_policy, build_tokenizer

    folder = tmp_path_factory.mktemp("vllm") / "policy"
    tokenizer = build_tokenizer(["The pages say Quux. Unknown."] * 5, vocab_size=400)
    build_tiny_policy(ModelConfig(hidden_size=32, num_heads=2, num_kv_heads=1, intermediate_size=64, num_layers=1,
                                  vision_hidden_size=32, vision_heads=1), tokenizer).save(folder)
    return folder


def _png(color: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (56, 56), color).save(buffer, format="PNG")
    return buffer.getvalue()


class Thumbnails(ImageSearch):
    def search(self, image, k=5):
        return [ImageHit(Image.new("RGB", (30, 20), "green"), "The Quux tower", "http://w/quux")]


def _engine(monkeypatch, policy_dir, **config):
    from mmsearch_r1.engines.vllm import VLLMEngine

    _install_fake_vllm(monkeypatch, logprobs_mode=config.pop("logprobs_mode", True))
    engine = VLLMEngine(policy_dir, EngineConfig(type="vllm", **config))
    return engine, FakeLLM.instances[-1]


def test_engine_options_follow_the_config_and_the_vllm_version(monkeypatch, policy_dir):
    _, llm = _engine(monkeypatch, policy_dir, dtype="bfloat16", vllm={"gpu_memory_utilization": 0.4, "max_model_len": 1024, "max_images_per_prompt": 3})
    assert llm.options["model"] == str(policy_dir) and llm.options["dtype"] == "bfloat16"
    assert (llm.options["gpu_memory_utilization"], llm.options["max_model_len"]) == (0.4, 1024)
    assert llm.options["limit_mm_per_prompt"] == {"image": 3} and llm.options["logprobs_mode"] == "processed_logprobs"
    _, older = _engine(monkeypatch, policy_dir, logprobs_mode=False)
    assert "logprobs_mode" not in older.options  # vLLM before 0.10.2 has no such argument


def test_rollout_feeds_vllm_the_ledger_and_images_and_records_what_it_samples(monkeypatch, policy_dir):
    engine, llm = _engine(monkeypatch, policy_dir)
    encoder = engine.encoder
    script = {1: SEARCH, 2: ANSWER}
    llm.reply = lambda ids, images: encoder.tokenizer.encode(script[len(images)], add_special_tokens=False) + [encoder.end_of_turn_id]
    samples = [VQASample(f"q{i}", "Where is it from?", _png(color), ["Quux"]) for i, color in enumerate(["red", "blue"])]
    sampling = SamplingConfig(temperature=0.7, top_p=0.9, max_new_tokens=40)
    out = rollout(samples, engine, Toolbox(image=Thumbnails()), n=2, protocol=ProtocolConfig(), sampling=sampling, seed=5)

    assert [t.actions for t in out] == [["image_search", "answer"]] * 4 and all(t.final_answer == "Quux" for t in out)
    (first_prompts, first_params), (second_prompts, _) = llm.calls
    assert [p.seed for p in first_params] == [5_000_016 + i for i in range(4)]  # turn_seed(5, 1) + row
    param = first_params[0]
    assert (param.temperature, param.top_p, param.max_tokens, param.logprobs) == (0.7, 0.9, 40, 0)
    assert param.stop_token_ids == [encoder.end_of_turn_id] and not param.skip_special_tokens
    assert set(param.logit_bias) == set(encoder.suppressed_ids) and set(param.logit_bias.values()) == {-100.0}
    for t, first, second in zip(out, first_prompts, second_prompts):
        # each turn, vLLM gets the episode's ledger so far (prompt, sampled turn, feedback) and its images in order
        assert t.token_ids[: len(second["prompt_token_ids"])] == second["prompt_token_ids"]
        assert second["prompt_token_ids"][: len(first["prompt_token_ids"])] == first["prompt_token_ids"]
        assert [im.size for im in second["multi_modal_data"]["image"]] == [(56, 56), (30, 20)]
        # what vLLM sampled is what the trajectory holds: ids, log-probs, loss mask
        sampled = [i for i, m in enumerate(t.loss_mask) if m]
        turn_lengths = [len(encoder.tokenizer.encode(text, add_special_tokens=False)) + 1 for text in (SEARCH, ANSWER)]
        assert len(sampled) == sum(turn_lengths)
        expected = [-0.1 * (i + 1) for n in turn_lengths for i in range(n)]
        assert [t.logprobs[i] for i in sampled] == pytest.approx(expected)
        # and the ledger is exactly the chat template over the messages, processed with the images
        text = engine.encoder.processor.apply_chat_template([m.to_chat() for m in t.messages], tokenize=False)
        text = text[: text.rindex("<|im_end|>") + len("<|im_end|>")]
        assert engine.encoder.processor(text=[text], images=t.images, add_special_tokens=False)["input_ids"][0] == t.token_ids


def test_a_turn_cut_at_max_tokens_gets_an_unsampled_end_of_turn(monkeypatch, policy_dir):
    engine, llm = _engine(monkeypatch, policy_dir)
    llm.reply = lambda ids, images: engine.encoder.tokenizer.encode(ANSWER, add_special_tokens=False) + [engine.encoder.end_of_turn_id]
    [t] = rollout([VQASample("q", "Where?", _png("red"), ["Quux"])], engine, None, protocol=ProtocolConfig(),
                  sampling=SamplingConfig(max_new_tokens=3), seed=0)
    assert t.meta["finish_reasons"] == ["length"] and t.end_reason == "invalid"
    assert t.token_ids[-1] == engine.encoder.end_of_turn_id and t.loss_mask[-4:] == [1, 1, 1, 0] and t.logprobs[-1] == 0.0


def test_retokenized_turns_are_rescored_from_vllm_prompt_logprobs(monkeypatch, policy_dir):
    engine, llm = _engine(monkeypatch, policy_dir)
    tokenizer = engine.encoder.tokenizer
    # the answer spelled one character at a time: the same text, not the tokenizer's own ids
    spelled = [tokenizer.convert_tokens_to_ids(c) for c in "Quux"]
    assert tokenizer.unk_token_id not in spelled and spelled != tokenizer.encode("Quux", add_special_tokens=False)
    head, tail = ANSWER.split("Quux</answer>")[0], "</answer>"
    llm.reply = lambda ids, images: tokenizer.encode(head, add_special_tokens=False) + spelled + tokenizer.encode(tail, add_special_tokens=False) + [engine.encoder.end_of_turn_id]
    [t] = rollout([VQASample("q", "Where?", _png("red"), ["Quux"])], engine, None, protocol=ProtocolConfig(), sampling=SamplingConfig(max_new_tokens=60), seed=0)
    assert t.meta["retokenized_turns"] == 1 and t.final_answer == "Quux"
    prompts, params = llm.calls[-1]
    assert params.prompt_logprobs == 0 and prompts[0]["prompt_token_ids"] == t.token_ids  # context + canonical turn
    start = t.loss_mask.index(1)
    # the log-prob of token j of the prompt is what vLLM reported at j (the stand-in says -0.01 j)
    assert t.logprobs[start:] == pytest.approx([-0.01 * j for j in range(start, len(t.token_ids))])
    assert all(lp == 0.0 for lp in t.logprobs[:start])
