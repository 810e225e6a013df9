"""The Hugging Face engine's per-episode KV cache on a tiny random Qwen2.5-VL with real local search indexes.

Episodes here run through the cached path every turn: ``ForcedTurns`` samples each turn with the engine and
then, where its script has a turn, keeps the scripted text instead, which the engine treats as a retokenized
turn (rescored through the cache, which must then hold the canonical ids). That gives multi-turn episodes
from random weights: ragged chunks (mid-row padding), retokenized turns followed by more turns, episodes
finishing at different turns, and image results arriving in a later turn.
"""

from __future__ import annotations

import io
import re

import pytest
import torch
from PIL import Image

from mmsearch_r1.config import ProtocolConfig
from mmsearch_r1.data import VQASample
from mmsearch_r1.engines.base import Context, GeneratedTurn, TokenizedContext
from mmsearch_r1.engines.config import SamplingConfig
from mmsearch_r1.engines import hf
from mmsearch_r1.engines.hf import EpisodeCache, HFEngine, chunk_positions, first_of_each as real_first_of_each, length_groups, score_sequences, token_logprobs, trajectory_logprobs
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
# per question: the scripted turns; the turn after them is sampled (random weights: almost always invalid, ending the episode)
SCRIPTS = {0: [IMAGE, TEXT], 1: [ANSWER], 2: [TEXT], 3: [IMAGE]}


def _png(color, size) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def policy():
    tokenizer = build_tokenizer(["Zorblat is a red tower in Quux; it is 120 m tall."] * 10, vocab_size=500)
    cfg = ModelConfig(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2, vision_hidden_size=32, vision_heads=2, vision_intermediate_size=64)
    return build_tiny_policy(cfg, tokenizer, seed=0)


@pytest.fixture(scope="module")
def toolbox(tmp_path_factory):
    root = tmp_path_factory.mktemp("indexes")
    pages = [{"url": f"http://world/{c}", "title": f"The {c} tower", "text": f"The {c} tower stands in Quux. It is {i * 10} m tall." * (i + 1)} for i, c in enumerate(COLORS)]
    items = [(Image.new("RGB", (48 + 8 * i, 32), c), f"The {c} tower", f"http://world/{c}") for i, c in enumerate(COLORS)]
    return Toolbox(LocalImageSearch(build_image_index(items, root / "image")), LocalTextSearch(build_text_index(pages, root / "text")))


def _samples():
    # questions of different lengths and images of different sizes: every chunk of a turn is ragged
    return [VQASample(f"q{i}", f"Question {i}: what is this?" + " Tell me." * i, _png(COLORS[i], (60 + 14 * i, 40)), ["120 m"]) for i in SCRIPTS]


def _question(context) -> int:
    return int(re.search(r"Question (\d+):", "".join(m.text for m in context.messages)).group(1))


class ForcedTurns(HFEngine):
    """Samples every turn with the engine, keeps the scripted text where there is one, and checks the cache as it goes."""

    def __init__(self, policy, **kwargs):
        super().__init__(policy, **kwargs)
        self.reused: list[int] = []  # per context of turns >= 2: tokens the cache already held before the call
        self.mid_row_padding = False
        self.cached_during: list[int] = []
        self.mixed_rescoring = False  # a call where some turns were retokenized and others not

    def generate(self, contexts, sampling, *, seed=None):
        held = {}
        if self._cache is not None:
            held = {id(row.owner()): list(row.ids) for row in self._cache.rows if row.owner() is not None}
        for context in contexts:
            if sum(m.role == "assistant" for m in context.messages) >= 1:
                ids = held.get(id(context.tokens), [])
                assert context.tokens.token_ids[: len(ids)] == ids  # the cache holds a prefix of the episode
                self.reused.append(len(ids))
        turns = super().generate(contexts, sampling, seed=seed)
        self.mixed_rescoring |= 0 < sum(t.retokenized for t in turns) < len(turns)
        if self.kv_cache:
            mask = self._cache.mask.tolist()
            self.mid_row_padding |= any(re.search("10+1", "".join(map(str, row))) for row in mask)
            self.cached_during.append(self.cached_episodes)
            for row, context, turn in zip(self._cache.rows, contexts, turns):
                target = context.tokens.token_ids + turn.token_ids
                assert target[: len(row.ids)] == row.ids and len(target) - len(row.ids) <= 2
                if turn.retokenized:
                    assert row.ids == target  # rescoring leaves the canonical ids in the cache
        return turns

    def _turn(self, context, new_ids, new_logprobs) -> GeneratedTurn:
        turn = super()._turn(context, new_ids, new_logprobs)
        script, done = SCRIPTS[_question(context)], sum(m.role == "assistant" for m in context.messages)
        if done >= len(script):
            return turn
        canonical = self.encoder.assistant_span(context.messages, script[done])
        return GeneratedTurn(script[done], canonical, list(new_logprobs), [1] * len(canonical), retokenized=True, sampled_tokens=len(new_ids))


def _run(engine, toolbox, sampling=None, seed=0):
    protocol = ProtocolConfig(image_top_k=2, text_top_k=2)
    return rollout(_samples(), engine, toolbox, n=2, protocol=protocol, sampling=sampling or SamplingConfig(max_new_tokens=12), seed=seed)


def _reencode(policy, trajectory):
    text = policy.processor.apply_chat_template([m.to_chat() for m in trajectory.messages], tokenize=False)
    text = text[: text.rindex("<|im_end|>") + len("<|im_end|>")]
    return policy.processor(text=[text], images=trajectory.images, add_special_tokens=False)["input_ids"][0]


@pytest.mark.parametrize("temperature, top_p, canonical", [(1.0, 1.0, True), (0.7, 0.9, True), (1.0, 1.0, False)])
def test_multi_turn_cached_rollout_matches_a_fresh_forward_pass(policy, toolbox, temperature, top_p, canonical, monkeypatch):
    # canonical_tokens off: sampled turns keep their ids and only the scripted ones are retokenized, so the
    # rescoring pass runs on some rows while the others wait parked
    distinct = []
    monkeypatch.setattr(hf, "first_of_each", lambda keys: distinct.append(real_first_of_each(keys)) or distinct[-1])
    engine = ForcedTurns(policy, canonical_tokens=canonical)
    assert engine.kv_cache
    out = _run(engine, toolbox, SamplingConfig(max_new_tokens=12, temperature=temperature, top_p=top_p))
    turns = {len(t.actions) for t in out}
    assert {1, 2, 3} <= turns  # episodes finish at different turns
    assert engine.mid_row_padding  # ragged chunks left padding in the middle of some row
    assert engine.reused and min(engine.reused) > 0  # every later turn found its episode's earlier tokens in the cache
    assert max(len(t.images) for t in out) == 3  # image results arrived in a later turn
    assert engine.mixed_rescoring or canonical
    assert [len(firsts) for firsts, _ in distinct] == [len(SCRIPTS)]  # the two episodes of each question shared their first prefill
    fresh = trajectory_logprobs(policy, out, temperature=temperature)
    for t, scores in zip(out, fresh):
        assert _reencode(policy, t) == t.token_ids or not canonical
        mask = torch.tensor(t.loss_mask, dtype=torch.bool)
        recorded = torch.tensor(t.logprobs)
        assert torch.allclose(recorded[mask], scores[mask], atol=1e-4, rtol=0)
        assert (recorded[~mask] == 0).all()
        assert t.meta["retokenized_turns"] >= len(SCRIPTS[int(t.sample_id[1:])][: len(t.actions)])


class LateJoiners(ForcedTurns):
    """Questions 2 and 3 get their first turn without the model (scored by a full forward pass, as an oracle
    engine would), so at turn 2 their episodes join the cache beside episodes already in it."""

    def generate(self, contexts, sampling, *, seed=None):
        opening = [c for c in contexts if not any(m.role == "assistant" for m in c.messages) and _question(c) in (2, 3)]
        if not opening:
            return super().generate(contexts, sampling, seed=seed)
        scripted = {}
        for context in opening:
            text = SCRIPTS[_question(context)][0]
            ids = self.encoder.assistant_span(context.messages, text)
            scripted[id(context)] = GeneratedTurn(text, ids, [0.0] * len(ids), [1] * len(ids), retokenized=True)
        self._rescore(list(scripted.values()), opening, sampling)
        sampled = iter(super().generate([c for c in contexts if id(c) not in scripted], sampling, seed=seed))
        return [scripted[id(c)] if id(c) in scripted else next(sampled) for c in contexts]


def test_episodes_joining_the_cache_in_a_later_turn(policy, toolbox):
    engine = LateJoiners(policy)
    out = _run(engine, toolbox)
    assert 0 in engine.reused and max(engine.reused) > 0  # turn 2 prefilled new rows beside cached ones
    fresh = trajectory_logprobs(policy, out)
    for t, scores in zip(out, fresh):
        assert _reencode(policy, t) == t.token_ids
        mask = torch.tensor(t.loss_mask, dtype=torch.bool)
        assert torch.allclose(torch.tensor(t.logprobs)[mask], scores[mask], atol=1e-4, rtol=0)


def test_cached_and_generate_paths_agree_on_greedy_turns(policy, toolbox):
    greedy = SamplingConfig(max_new_tokens=10, temperature=0.0)
    cached, plain = (_run(ForcedTurns(policy, kv_cache=kv), toolbox, greedy) for kv in (True, False))
    assert [t.token_ids for t in cached] == [t.token_ids for t in plain]
    for a, b in zip(cached, plain):
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-4, rtol=0)


def test_same_seed_same_multi_turn_trajectories(policy, toolbox):
    engine = ForcedTurns(policy)
    assert_seeded(lambda seed: _run(engine, toolbox, seed=seed), 7, 8)


def test_the_cache_is_released_when_the_rollout_is_over(policy, toolbox):
    engine = ForcedTurns(policy)
    _run(engine, toolbox)
    assert max(engine.cached_during) == 2 * len(SCRIPTS)
    assert engine.cached_episodes == 0 and engine._cache.cache is None


def test_chunk_positions_equal_the_rope_index_of_the_whole_episode(policy, toolbox):
    [t] = [t for t in _run(ForcedTurns(policy), toolbox) if len(t.images) == 3][:1]
    processed = policy.processor.image_processor(images=list(t.images), return_tensors="pt")
    grids = list(processed["image_grid_thw"])
    ids = torch.tensor([t.token_ids])
    image_id = policy.processor.image_token_id
    whole, _ = policy.model.model.get_rope_index(ids, (ids == image_id).int(), image_grid_thw=torch.stack(grids))
    whole = whole[:, 0]
    starts = [i for i in range(1, len(t.token_ids)) if t.token_ids[i - 1] != image_id or t.token_ids[i] != image_id]
    merge = policy.model.config.vision_config.spatial_merge_size
    for cut in starts[:: max(1, len(starts) // 25)]:
        placeholders, held = t.token_ids[:cut].count(image_id), 0
        while placeholders > 0:
            placeholders -= int(grids[held].prod()) // merge**2
            held += 1
        start = int(whole[:, :cut].max()) + 1
        assert torch.equal(chunk_positions(policy.model, t.token_ids[cut:], grids[held:], image_id, start), whole[:, cut:])


@pytest.mark.parametrize("pass_overhead", [256, 0])
def test_ragged_chunks_parked_rows_and_truncation_give_the_logits_of_a_fresh_pass(policy, monkeypatch, pass_overhead):
    """Drives the cache directly: rows of different lengths, two decode steps, rows parked and brought back,
    one row cut back (as after a retokenized turn), then ragged new chunks; the final logits of every row
    equal a fresh forward pass over that row's whole sequence. With no cost per pass every prefill is split
    into one forward pass per chunk length."""
    monkeypatch.setattr(hf, "PASS_OVERHEAD", pass_overhead)
    passes, real = [], length_groups
    monkeypatch.setattr(hf, "length_groups", lambda lengths, overhead: passes.append(real(lengths, overhead)) or passes[-1])
    engine = HFEngine(policy)
    engine._cache = cache = EpisodeCache(policy.model, engine.encoder.pad_id)
    vocab = [i for i in range(300) if i not in set(engine.encoder.suppressed_ids)]
    gen = torch.Generator().manual_seed(0)
    draw = lambda n: [vocab[int(i)] for i in torch.randint(len(vocab), (n,), generator=gen)]  # noqa: E731
    owners = [TokenizedContext(draw(n)) for n in (5, 11, 8, 3)]
    contexts = [Context([], [], o) for o in owners]
    with torch.no_grad():
        cache.align(owners)
        engine._feed(contexts, [o.token_ids for o in owners], [len(o.token_ids) for o in owners])
        live = torch.ones(4, dtype=torch.bool)
        for _ in range(2):
            cache.step(torch.tensor(draw(4)), live)
        cache.park(torch.tensor([True, False, True, False]))
        for _ in range(3):
            cache.step(torch.tensor(draw(2)), torch.ones(2, dtype=torch.bool))
        cache.unpark()
        assert [len(row.ids) for row in cache.rows] == [5 + 5, 11 + 2, 8 + 5, 3 + 2]
        cache.truncate(2, 9)  # row 2 keeps its context and one decoded token
        targets = [row.ids + draw(n) for row, n in zip(cache.rows, (4, 1, 6, 2))]
        targets[2] = targets[2][:9] + draw(3)
        for o, target in zip(owners, targets):
            o.token_ids = target
        got = engine._feed(contexts, targets, [len(t) - 2 for t in targets])  # logits of each row's last three positions
        fresh = score_sequences(policy.model, engine.encoder, targets, [[]] * 4, [[]] * 4)
    assert [row.ids for row in cache.rows] == targets
    assert [len(groups) for groups in passes] == ([1, 1] if pass_overhead else [4, 2])  # second chunks: 4, 3, 3, 3
    for target, logits, scores in zip(targets, got, fresh):
        assert logits.shape[0] == 3
        mine = token_logprobs(logits[:-1], torch.tensor(target[-2:]), 1.0, engine.encoder.suppressed_ids)
        assert torch.allclose(mine, scores[-2:], atol=1e-5, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_cached_path_on_a_gpu_matches_a_fresh_forward_pass(toolbox, tmp_path):
    # padding queries of a first chunk see no column at all; on a GPU their attention kernel must not turn them into NaN
    tokenizer = build_tokenizer(["Zorblat is a red tower in Quux; it is 120 m tall."] * 10, vocab_size=500)
    cfg = ModelConfig(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2, vision_hidden_size=32, vision_heads=2, vision_intermediate_size=64)
    gpu_policy = build_tiny_policy(cfg, tokenizer, seed=0)
    gpu_policy.model.to("cuda")
    out = _run(ForcedTurns(gpu_policy), toolbox)
    fresh = trajectory_logprobs(gpu_policy, out)
    for t, scores in zip(out, fresh):
        mask = torch.tensor(t.loss_mask, dtype=torch.bool)
        assert torch.allclose(torch.tensor(t.logprobs)[mask], scores.cpu()[mask], atol=1e-3, rtol=0)


def test_engine_config_switches_the_cache(policy, tmp_path):
    from mmsearch_r1.engines import build_engine
    from mmsearch_r1.engines.config import EngineConfig

    policy.save(tmp_path)
    on = build_engine(EngineConfig(type="hf"), ModelConfig(path=tmp_path))
    off = build_engine(EngineConfig(type="hf", kv_cache=False), ModelConfig(path=tmp_path))
    assert on.kv_cache and not off.kv_cache
