"""Search balancing: labels from the model's own success, the balanced mix, agreement with the generator."""

import io
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from mmsearch_r1.config import ProtocolConfig
from mmsearch_r1.data import VQASample
from mmsearch_r1.data.balance import agreement, balance, balanced_subset, label, success_rates
from mmsearch_r1.data.config import BalanceConfig
from mmsearch_r1.engines.scripted import ScriptedEngine
from mmsearch_r1.errors import ConfigError
from mmsearch_r1.tools.base import ImageHit, ImageSearch, TextHit, TextSearch, Toolbox
from mmsearch_r1.trajectory import Trajectory


def png():
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "white").save(buffer, format="PNG")
    return buffer.getvalue()


def sample(i, need):
    return VQASample(f"q{i}", f"What is the motto of item {i} ({need})?", png(), [f"gold{i}"], search_need=need)


def trajectory(sample_id, answer, gold):
    return Trajectory(sample_id, "g", [], [], [], [], [], ["answer"], "answer", final_answer=answer, gold_answers=[gold])


def test_success_rates_per_sample():
    rates = success_rates([trajectory("a", "x", "x"), trajectory("a", "y", "x"), trajectory("b", None, "x")])
    assert rates == {"a": 0.5, "b": 0.0}


@pytest.mark.parametrize(
    "direct, searched, expected",
    [(1.0, 0.0, "search_free"), (0.5, 0.0, "search_free"), (0.25, 1.0, "search_required"), (0.0, 0.25, "search_required"),
     (0.0, 0.0, None), (0.25, 0.25, None)],
)
def test_label(direct, searched, expected):
    assert label(direct, searched, free_threshold=0.5) == expected


def test_keep_unsolved():
    assert label(0.0, 0.0, free_threshold=0.5, keep_unsolved=True) == "search_required"


@pytest.mark.parametrize(
    "direct, searched, penalty, expected",
    [(0.75, 1.0, 0.1, None), (0.75, 0.75, 0.1, "search_free"), (1.0, 1.0, 0.1, "search_free"), (0.5, 1.0, 0.5, "search_free"),
     (0.5, 0.75, 0.0, None), (0.25, 1.0, 0.1, "search_required"), (0.0, 0.0, 0.1, None)],
)
def test_a_free_label_needs_answering_to_earn_what_searching_earns(direct, searched, penalty, expected):
    assert label(direct, searched, free_threshold=0.5, search_penalty=penalty) == expected
    assert label(direct, searched, free_threshold=0.5, search_penalty=penalty, keep_unsolved=True) == (expected or (
        "search_required" if direct < 0.5 else None))


def test_balanced_subset_respects_share_size_and_seed():
    pool = [VQASample(str(i), "q", b"", ["a"], category="search_free" if i < 30 else "search_required") for i in range(60)]
    chosen = balanced_subset(pool, 1 / 3, 24, np.random.default_rng(1))
    assert Counter(s.category for s in chosen) == {"search_free": 8, "search_required": 16}
    assert [s.id for s in chosen] == [s.id for s in balanced_subset(pool, 1 / 3, 24, np.random.default_rng(1))]
    assert [s.id for s in chosen] != [s.id for s in balanced_subset(pool, 1 / 3, 24, np.random.default_rng(2))]
    only_required = balanced_subset(pool, 0.0, None, np.random.default_rng(0))
    assert {s.category for s in only_required} == {"search_required"} and len(only_required) == 30


def test_agreement_counts_free_as_need_none():
    samples = [
        VQASample("a", "q", b"", ["x"], category="search_free", search_need="none"),
        VQASample("b", "q", b"", ["x"], category="search_required", search_need="none"),
        VQASample("c", "q", b"", ["x"], category="search_required", search_need="text"),
        VQASample("d", "q", b"", ["x"], category="search_required", search_need="image_text"),
    ]
    report = agreement(samples)
    assert report["agreement"] == 0.75 and report["n"] == 4
    assert report["by_need"]["none"] == {"search_free": 1, "search_required": 1}


class Pages(TextSearch):
    def search(self, query, k=5):
        return [TextHit("page", "http://p", f"the answer is {query.split()[-1]}")]


class Lens(ImageSearch):
    def search(self, image, k=5):
        return [ImageHit(image, "thumb", "http://t")]


def test_balance_labels_from_the_models_own_success():
    # The scripted "model" knows items whose need is `none`; with search results it reads the gold word.
    samples = [sample(i, need) for i, need in enumerate(["none", "none", "text", "image", "image_text", "none"] * 2)]
    samples.append(sample(99, "text"))  # unsolvable: the model never gets it, even with search

    def reply(context):
        text = "".join(m.text for m in context.messages)
        i = int(text.split("item ")[1].split(" ")[0])
        if "<information>" in text and "the answer is" in text:
            return f"<reason>read it</reason><answer>{text.split('the answer is ')[1].split()[0]}</answer>"
        if "<information>" in text:  # rag, before the text search: write the query
            return f"<reason>look up</reason><text_search>motto gold{i if i != 99 else 'nope'}</text_search>"
        return f"<reason>r</reason><answer>{'gold%d' % i if '(none)' in text else 'unknown'}</answer>"

    result = balance(samples, ScriptedEngine(reply), Toolbox(Lens(), Pages()), BalanceConfig(k=2, free_share=1 / 3),
                     protocol=ProtocolConfig(), max_new_tokens=32)
    labels = {s.id: s.category for s in result.labelled}
    assert labels["q0"] == "search_free" and labels["q2"] == "search_required" and labels["q4"] == "search_required"
    assert result.dropped == ["q99"]
    assert result.summary()["agreement_with_generator"]["agreement"] == 1.0
    # 6 free and 6 required candidates; at 1 free : 2 required the largest mix is 3 + 6.
    assert Counter(s.category for s in result.selected) == {"search_free": 3, "search_required": 6}


def test_questions_known_only_sometimes_but_always_read_are_dropped():
    # q0 is answered right at once on every episode, q1 on every other one; with search both are read every time.
    samples = [sample(0, "none"), sample(1, "none")]
    calls = Counter()

    def reply(context):
        text = "".join(m.text for m in context.messages)
        i = int(text.split("item ")[1].split(" ")[0])
        if "<information>" in text and "the answer is" in text:
            return f"<reason>read it</reason><answer>{text.split('the answer is ')[1].split()[0]}</answer>"
        if "<information>" in text:
            return f"<reason>look up</reason><text_search>motto gold{i}</text_search>"
        calls[i] += 1
        return f"<reason>r</reason><answer>{'gold%d' % i if i == 0 or calls[i] % 2 else 'unknown'}</answer>"

    run = lambda **cfg: balance(samples, ScriptedEngine(reply), Toolbox(Lens(), Pages()), BalanceConfig(k=4, **cfg),  # noqa: E731
                                protocol=ProtocolConfig(), max_new_tokens=32, search_penalty=0.1)
    result = run(drop_search_paying=True)
    assert result.direct_rate == {"q0": 1.0, "q1": 0.5} and result.search_rate == {"q0": 1.0, "q1": 1.0}
    assert [s.id for s in result.labelled] == ["q0"] and result.search_paying == ["q1"] and result.dropped == []
    assert result.summary()["dropped_search_paying"] == 1 and result.summary()["candidates"] == 2
    published = run()  # the published rule (the default): free at the threshold, no search episodes for it
    assert {s.id: s.category for s in published.labelled} == {"q0": "search_free", "q1": "search_free"}
    assert published.search_rate == {}
    with pytest.raises(ConfigError, match="search penalty"):
        balance(samples, ScriptedEngine(reply), Toolbox(Lens(), Pages()), BalanceConfig(drop_search_paying=True),
                protocol=ProtocolConfig(), max_new_tokens=32)


def test_candidates_caps_the_questions_labelled():
    samples = [sample(i, "none") for i in range(10)]
    engine = ScriptedEngine(lambda context: "<reason>r</reason><answer>x</answer>")
    result = balance(samples, engine, Toolbox(Lens(), Pages()), BalanceConfig(k=1, candidates=4),
                     protocol=ProtocolConfig(), max_new_tokens=8)
    assert len(result.labelled) + len(result.dropped) == 4
    assert engine.batch_sizes == [4, 4]  # direct for the four, then rag for the four that failed (its answer-first turn ends it)
