"""The demo world's generator without files: names, groups, facts, signatures, renderings, pages, questions."""

import numpy as np
import pytest

from mmsearch_r1.errors import ConfigError, DataError
from mmsearch_r1.tools.summary import extractive_summary, split_sentences
from mmsearch_r1.world.build import generate_world
from mmsearch_r1.world.config import WorldConfig
from mmsearch_r1.world.names import city_names, entity_names
from mmsearch_r1.world.pages import world_pages
from mmsearch_r1.world.questions import split_samples
from mmsearch_r1.world.render import PALETTE, choose_signatures, render_entity
from mmsearch_r1.world.schema import GROUPS, load_world
from mmsearch_r1.world.vocab import ATTRIBUTES, FILLER_SENTENCES, NAME_SENTENCES


@pytest.fixture(scope="module")
def world():
    return generate_world(seed=3, size="small")


def test_names_are_unique_pronounceable_and_avoid_taken_words():
    taken = {"red", "fox"}
    names = entity_names(np.random.default_rng(0), 120, taken)
    cities = city_names(np.random.default_rng(1), 30, taken)
    assert len(set(names + cities)) == 150
    assert all(n.isalpha() and n[0].isupper() and n[1:].islower() for n in names + cities)
    assert not {"red", "fox"} & {n.lower() for n in names}
    assert names == entity_names(np.random.default_rng(0), 120, {"red", "fox"})
    import difflib

    assert all(difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio() < 0.8 for i, a in enumerate(names) for b in names[:i])


def test_no_name_is_a_word_of_the_world_texts():
    from mmsearch_r1.world.build import _vocabulary_words

    words = _vocabulary_words()
    assert {"vote", "guild", "city", "red"} <= words
    for seed in range(3):
        world = generate_world(seed=seed, size="default")
        names = [e.name for e in world.entities] + [v[0] for v in world.attribute("home_city").values]
        assert not {n.lower() for n in names} & words


def test_groups_are_even_and_fix_search_need_and_category(world):
    counts = {g: len(world.in_group(g)) for g in GROUPS}
    assert counts == {g: 5 for g in GROUPS}
    for entity in world.entities:
        need, sight, facts = GROUPS[entity.group]
        assert (entity.search_need, entity.known_by_sight, entity.facts_known) == (need, sight, facts)
        assert entity.category == ("search_free" if need == "none" else "search_required")
    assert {e.search_need for e in world.entities} == {"none", "text", "image", "image_text"}


def test_entities_have_three_to_five_facts_from_the_vocabularies(world):
    for entity in world.entities:
        assert 3 <= len(entity.facts) <= 5
        assert len({f.attribute for f in entity.facts}) == len(entity.facts)
        for fact in entity.facts:
            values = world.attribute(fact.attribute).values
            assert (fact.answer, *fact.aliases) in values
            assert " " not in fact.answer


def test_values_are_dealt_evenly_within_each_group():
    import collections

    world = generate_world(seed=0, size="default")
    for group in GROUPS:
        for attribute in world.attributes:
            holders = [e for e in world.in_group(group) if attribute.name in {f.attribute for f in e.facts}]
            counts = collections.Counter(e.fact(attribute.name).answer for e in holders)
            used = [counts.get(v[0], 0) for v in attribute.values]
            assert max(used) - min(used) <= 1, (group, attribute.name, counts)


def test_signatures_have_distinct_colour_pairs():
    signatures = choose_signatures(np.random.default_rng(0), 120)
    pairs = [(s.colour, s.accent) for s in signatures]
    assert len(set(pairs)) == 120
    assert all(s.colour in PALETTE and s.accent in PALETTE and s.colour != s.accent for s in signatures)
    unordered = {frozenset(p) for p in pairs[:66]}
    assert len(unordered) == 66  # the first 66 entities never share a colour pair, even reversed
    with pytest.raises(ValueError):
        choose_signatures(np.random.default_rng(0), 133)


def test_renderings_are_jittered_sized_and_reproducible(world):
    entity = world.entities[0]
    a = render_entity(world, entity, np.random.default_rng(1))
    b = render_entity(world, entity, np.random.default_rng(2))
    again = render_entity(world, entity, np.random.default_rng(1))
    assert a.size == (84, 84) and a.mode == "RGB"
    assert render_entity(world, entity, np.random.default_rng(1), 56).size == (56, 56)
    assert np.array_equal(np.asarray(a), np.asarray(again))
    assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).mean() > 5


def test_world_json_round_trips(world, tmp_path):
    world.save(tmp_path)
    loaded = load_world(tmp_path)
    assert loaded == world and loaded.root == tmp_path


def test_load_world_names_the_problem(tmp_path):
    with pytest.raises(DataError, match="world build"):
        load_world(tmp_path)
    (tmp_path / "world.json").write_text('{"format_version": 1}')
    with pytest.raises(DataError, match="not a valid world file"):
        load_world(tmp_path)


def test_config_rejects_impossible_fact_counts():
    with pytest.raises(ConfigError, match="min_facts"):
        generate_world(0, cfg=WorldConfig(min_facts=5, max_facts=3))
    with pytest.raises(ConfigError, match="size"):
        generate_world(0, size="huge")


def _phrase_words() -> set[str]:
    return {w for spec in ATTRIBUTES for w in spec.phrase.split()}


def test_fillers_hold_no_phrase_word_and_name_no_entity():
    words = _phrase_words()
    for sentence in FILLER_SENTENCES:
        assert not words & {w.strip(".").lower() for w in sentence.split()}, sentence
    for sentence in NAME_SENTENCES:
        assert not words & {w.strip(".").lower() for w in sentence.split()}, sentence


def test_pages_name_their_entity_only_after_the_facts(world):
    pages = world_pages(world, np.random.default_rng(0))
    assert len(pages) == 2 * len(world.entities) + len(world.attributes)
    for page in pages:
        sentences = split_sentences(page.text)
        if page.entity is None:  # guide pages name no entity
            assert not any(e.name in page.text for e in world.entities)
            continue
        entity = world.entity(page.entity)
        assert entity.name in page.title
        fact_positions = [i for i, s in enumerate(sentences) if s in {world.fact_sentence(f) for f in entity.facts}]
        name_positions = [i for i, s in enumerate(sentences) if entity.name in s]
        assert fact_positions and name_positions and max(fact_positions) < min(name_positions)


def test_summary_for_name_and_phrase_opens_with_the_fact(world):
    pages = [p for p in world_pages(world, np.random.default_rng(0)) if p.url.count("/") == 3]  # profile pages
    for page in pages:
        entity = world.entity(page.entity)
        for fact in entity.facts:
            summary = extractive_summary(page.text, world.text_query(entity, fact.attribute))
            assert split_sentences(summary)[0] == world.fact_sentence(fact)


def test_heldout_questions_use_only_heldout_templates():
    tiny = generate_world(seed=1, cfg=WorldConfig(size="small", entities=4))
    heldout_ids = {t.id for t in tiny.templates if t.split == "heldout"}
    assert heldout_ids and all(t.attribute for t in tiny.templates)
    train = split_samples(tiny, "train", 2)
    heldout = split_samples(tiny, "heldout", 1)
    assert not {s.extra["template"] for s in train} & heldout_ids
    assert {s.extra["template"] for s in heldout} <= heldout_ids
    assert len(train) == 2 * sum(len(e.facts) for e in tiny.entities)
    sample = heldout[0]
    entity = tiny.entity(sample.extra["entity"])
    assert sample.answers == entity.fact(sample.extra["attribute"]).answers
    assert sample.search_need == entity.search_need and sample.category == entity.category
    assert entity.name not in sample.question
    assert [s.id for s in heldout] == [f"world-heldout-{i:05d}" for i in range(len(heldout))]


def test_any_seed_and_size_gives_a_well_formed_world():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=6, deadline=None)
    @given(seed=st.integers(0, 2**31 - 1), entities=st.integers(4, 132))  # generation only, no rendering
    def check(seed, entities):
        world = generate_world(seed, cfg=WorldConfig(entities=entities))
        assert len({e.name for e in world.entities}) == entities
        sizes = [len(world.in_group(g)) for g in GROUPS]
        assert max(sizes) - min(sizes) <= 1
        assert len({(e.signature.colour, e.signature.accent) for e in world.entities}) == entities
        assert all(3 <= len(e.facts) <= 5 for e in world.entities)

    check()
