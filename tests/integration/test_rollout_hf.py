"""Rollout with the Hugging Face engine on a tiny random Qwen2.5-VL and real local search indexes.

(a) re-encoding a finished trajectory's messages reproduces its token ids and loss mask exactly;
(b) recorded log-probs equal a fresh forward pass over the whole trajectory, all images included (1e-4, fp32);
plus determinism for a seed and the rules on sampled special tokens.
"""

from __future__ import annotations

import io

import pytest
import torch
from PIL import Image

from mmsearch_r1.config import ProtocolConfig
from mmsearch_r1.data import VQASample
from mmsearch_r1.engines.base import GeneratedTurn
from mmsearch_r1.engines.config import SamplingConfig
from mmsearch_r1.engines.hf import HFEngine, body_and_head, trajectory_logprobs
from mmsearch_r1.engines.scripted import ScriptedEngine
from mmsearch_r1.errors import ToolTimeout
from mmsearch_r1.models import ModelConfig, build_tiny_policy, build_tokenizer
from mmsearch_r1.rollout import rollout
from mmsearch_r1.tools.base import Toolbox
from mmsearch_r1.tools.local_image import LocalImageSearch, build_image_index
from mmsearch_r1.tools.local_text import LocalTextSearch, build_text_index
from seeding import assert_seeded

IMAGE = "<reason>I do not know this place.</reason><search><img></search>"
TEXT = "<reason>The pages say Quux.</reason><text_search>Zorblat tower height</text_search>"
ANSWER = "<reason>The page says so.</reason><answer>120 m</answer>"
COLORS = ["red", "green", "blue", "yellow", "purple", "orange"]


def _png(color, size=(60, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    tokenizer = build_tokenizer(["Zorblat is a red tower in Quux; it is 120 m tall."] * 10, vocab_size=500)
    cfg = ModelConfig(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2, vision_hidden_size=32, vision_heads=2, vision_intermediate_size=64)
    return build_tiny_policy(cfg, tokenizer, seed=0)


@pytest.fixture(scope="module")
def toolbox(tmp_path_factory):
    root = tmp_path_factory.mktemp("indexes")
    pages = [{"url": f"http://world/{c}", "title": f"The {c} tower", "text": f"The {c} tower stands in Quux. It is {i * 10} m tall."} for i, c in enumerate(COLORS)]
    items = [(Image.new("RGB", (48, 32), c), f"The {c} tower", f"http://world/{c}") for c in COLORS]
    return Toolbox(LocalImageSearch(build_image_index(items, root / "image")), LocalTextSearch(build_text_index(pages, root / "text")))


def _samples(count=3):
    # questions of different lengths and images of different sizes, so that left padding is exercised
    return [VQASample(f"q{i}", "What is this?" + " Tell me." * i, _png(COLORS[i], (60 + 14 * i, 40)), ["120 m"]) for i in range(count)]


class ScriptedOpening(HFEngine):
    """Writes the first turns from a script (scored by a forward pass), then samples with the model."""

    def __init__(self, policy, opening, **kwargs):
        super().__init__(policy, **kwargs)
        self.opening = opening

    def generate(self, contexts, sampling, *, seed=None):
        done = sum(m.role == "assistant" for m in contexts[0].messages)
        if done >= len(self.opening):
            return super().generate(contexts, sampling, seed=seed)
        turns = []
        for context in contexts:
            ids = self.encoder.assistant_span(context.messages, self.opening[done])
            turns.append(GeneratedTurn(self.opening[done], ids, [0.0] * len(ids), [1] * len(ids), retokenized=True))
        self._rescore(turns, contexts, sampling)
        return turns


def _expected_mask(policy, ids, finish_reasons):
    """1 on each assistant span (after ``<|im_start|>assistant\\n`` through its ``<|im_end|>``), found by scanning ids."""
    tokenizer = policy.tokenizer
    opener = tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    mask, i, turn = [0] * len(ids), 0, 0
    while i < len(ids):
        if ids[i : i + len(opener)] == opener:
            j = i + len(opener)
            while j < len(ids) and ids[j] != end:
                mask[j] = 1
                j += 1
            if j < len(ids):
                mask[j] = 1 if finish_reasons[turn] == "stop" else 0
            turn, i = turn + 1, j
        i += 1
    return mask


def _reencode(policy, trajectory):
    text = policy.processor.apply_chat_template([m.to_chat() for m in trajectory.messages], tokenize=False)
    text = text[: text.rindex("<|im_end|>") + len("<|im_end|>")]  # the episode ends at its last end-of-turn token
    return policy.processor(text=[text], images=trajectory.images, add_special_tokens=False)["input_ids"][0]


def _run(engine, toolbox, **kwargs):
    kwargs.setdefault("protocol", ProtocolConfig(image_top_k=2, text_top_k=2))
    kwargs.setdefault("sampling", SamplingConfig(max_new_tokens=12, temperature=1.0))
    return rollout(_samples(), engine, toolbox, n=2, **kwargs)


# --- (a) ----------------------------------------------------------------------------------------------


def test_a_reencoding_reproduces_ids_and_mask_with_scripted_turns(policy, toolbox):
    engine = ScriptedEngine(lambda c: [IMAGE, TEXT, ANSWER][sum(m.role == "assistant" for m in c.messages)], encoder=HFEngine(policy).encoder)
    out = _run(engine, toolbox)
    for t in out:
        assert t.actions == ["image_search", "text_search", "answer"] and len(t.images) == 3
        assert _reencode(policy, t) == t.token_ids
        assert t.loss_mask == _expected_mask(policy, t.token_ids, ["stop"] * 3)
        image_pad = policy.processor.image_token_id
        assert all(m == 0 for tok, m in zip(t.token_ids, t.loss_mask) if tok == image_pad)


def test_a_reencoding_reproduces_ids_and_mask_with_sampled_turns(policy, toolbox):
    out = _run(ScriptedOpening(policy, [IMAGE, TEXT]), toolbox)
    assert sum(t.meta["retokenized_turns"] for t in out) >= len(out) * 2  # the scripted turns at least
    for t in out:
        assert len(t.actions) == 3 and t.image_searches == 1 and t.text_searches == 1
        assert _reencode(policy, t) == t.token_ids
        assert t.loss_mask == _expected_mask(policy, t.token_ids, t.meta["finish_reasons"])


def test_a_with_a_tool_failure_turn(policy, toolbox):
    class Broken(LocalTextSearch):
        def search(self, query, k=5):
            raise ToolTimeout("the text index did not answer in 5 s")

    broken = Toolbox(toolbox.image, Broken(toolbox.text.index_dir))
    engine = ScriptedEngine(lambda c: [TEXT, ANSWER][sum(m.role == "assistant" for m in c.messages)], encoder=HFEngine(policy).encoder)
    for t in _run(engine, broken):
        assert t.tool_failures == 1 and t.end_reason == "answer"
        assert _reencode(policy, t) == t.token_ids


# --- (b) ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_b_recorded_logprobs_equal_a_fresh_forward_pass(policy, toolbox, temperature):
    sampling = SamplingConfig(max_new_tokens=12, temperature=temperature, top_p=0.9)
    out = _run(ScriptedOpening(policy, [IMAGE, TEXT], canonical_tokens=False), toolbox, sampling=sampling)
    fresh = trajectory_logprobs(policy, out, temperature=temperature)
    sampled_by_generate = 0
    for t, scores in zip(out, fresh):
        mask = torch.tensor(t.loss_mask, dtype=torch.bool)
        recorded = torch.tensor(t.logprobs)
        assert scores.shape == recorded.shape and scores.dtype == torch.float32
        assert torch.allclose(recorded[mask], scores[mask], atol=1e-4, rtol=0)
        assert (recorded[~mask] == 0).all() and (recorded[mask] < 0).all()
        sampled_by_generate += t.meta["finish_reasons"][-1] in ("stop", "length")
        assert len(t.images) == 3  # question image + two thumbnails were in the context of the sampled turn
    assert sampled_by_generate == len(out)


def test_b_holds_for_retokenized_turns_and_the_gradient_flows(policy, toolbox):
    out = _run(HFEngine(policy), toolbox)
    fresh = trajectory_logprobs(policy, out)
    for t, scores in zip(out, fresh):
        mask = torch.tensor(t.loss_mask, dtype=torch.bool)
        assert torch.allclose(torch.tensor(t.logprobs)[mask], scores[mask], atol=1e-4, rtol=0)
    total = sum((s * torch.tensor(t.loss_mask)).sum() for s, t in zip(trajectory_logprobs(policy, out[:2]), out[:2]))
    total.backward()
    grad = policy.model.get_input_embeddings().weight.grad
    assert grad is not None and grad.abs().sum() > 0
    policy.model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("split", [True, False])
def test_scoring_only_the_sampled_tokens_gives_the_same_values_and_gradients(policy, toolbox, temperature, split, monkeypatch):
    # the trainer scores the loss mask's tokens only, the output head on those positions where the model
    # allows it (split) and on every position otherwise; values and gradients stay those of the full pass
    import mmsearch_r1.engines.hf as hf

    if not split:
        monkeypatch.setattr(hf, "BODY_THEN_HEAD", frozenset())
    out = _run(ScriptedOpening(policy, [IMAGE, TEXT], canonical_tokens=False), toolbox, sampling=SamplingConfig(max_new_tokens=12, temperature=temperature))
    head_rows = []
    hook = policy.model.get_output_embeddings().register_forward_hook(lambda module, args, output: head_rows.append(args[0].shape[:-1].numel()))
    gradients = []
    try:
        for sampled_only in (False, True):
            head_rows.clear()
            scores = trajectory_logprobs(policy, out, temperature=temperature, sampled_only=sampled_only)
            sum((s * torch.tensor(t.loss_mask)).sum() for s, t in zip(scores, out)).backward()
            gradients.append({name: p.grad.clone() for name, p in policy.model.named_parameters() if p.grad is not None})
            policy.model.zero_grad(set_to_none=True)
            if not sampled_only:
                full = [s.detach() for s in scores]
    finally:
        hook.remove()
    longest = max(len(t.token_ids) for t in out)
    assert head_rows == [sum(sum(t.loss_mask[1:]) for t in out)] if split else head_rows == [len(out) * longest]
    for t, everything, only in zip(out, full, scores):
        mask = torch.tensor(t.loss_mask, dtype=torch.bool)
        assert only.shape == everything.shape and mask.sum() > 0
        assert torch.allclose(only[mask], everything[mask], atol=1e-5, rtol=0)
        assert (only[~mask] == 0).all() and (everything[~mask] != 0).any()
    assert gradients[0].keys() == gradients[1].keys() and len(gradients[0]) > 10
    for name, grad in gradients[0].items():
        assert (grad - gradients[1][name]).abs().max() <= 1e-5 * grad.abs().max(), name  # fp32 sums in another order


def test_only_a_model_split_into_body_and_head_is_scored_by_parts(policy):
    class Wrapper(torch.nn.Module):  # like an adapter library's wrapper: `.model` is a whole causal LM
        def __init__(self, inner):
            super().__init__()
            self.model = inner

        def get_output_embeddings(self):
            return self.model.get_output_embeddings()

    body, head = body_and_head(policy.model)
    assert body is policy.model.model and head is policy.model.get_output_embeddings()
    assert body_and_head(Wrapper(policy.model)) is None


# --- determinism and sampling rules ----------------------------------------------------------------


def test_same_seed_same_trajectories_other_seed_others(policy, toolbox):
    engine = HFEngine(policy)
    assert_seeded(lambda seed: _run(engine, toolbox, seed=seed), 3, 4)


def test_sampled_spans_hold_no_special_token_but_the_end_of_turn(policy, toolbox):
    engine = HFEngine(policy, canonical_tokens=False)
    out = _run(engine, toolbox, sampling=SamplingConfig(max_new_tokens=40))
    suppressed = set(engine.encoder.suppressed_ids)
    for t in out:
        sampled = [tok for tok, m in zip(t.token_ids, t.loss_mask) if m]
        assert not suppressed & set(sampled)
        assert t.token_ids[-1] == engine.encoder.end_of_turn_id
        assert len(t.token_ids) == len(t.loss_mask) == len(t.logprobs)
        assert t.meta["sampled_tokens"] == sum(t.loss_mask) > 0


def test_greedy_turns_are_the_same_whatever_the_seed(policy, toolbox):
    engine = HFEngine(policy)
    greedy = SamplingConfig(max_new_tokens=8, temperature=0.0)
    a, b = (_run(engine, toolbox, seed=s, sampling=greedy) for s in (1, 2))
    assert [t.token_ids for t in a] == [t.token_ids for t in b]


@pytest.mark.parametrize("workflow, script", [("rag", [TEXT, ANSWER]), ("direct", [ANSWER])])
def test_a_holds_in_the_rag_and_direct_workflows(policy, toolbox, workflow, script):
    engine = ScriptedEngine(lambda c: script[sum(m.role == "assistant" for m in c.messages)], encoder=HFEngine(policy).encoder)
    for t in _run(engine, toolbox, workflow=workflow):
        assert t.end_reason == "answer" and t.searches == (2 if workflow == "rag" else 0)
        assert _reencode(policy, t) == t.token_ids
        assert t.loss_mask == _expected_mask(policy, t.token_ids, ["stop"] * len(script))
