"""Scripted demonstrations: uncalibrated actions, real feedback turns through rollout, and masks on unknowable pieces."""

import io

import numpy as np
import pytest
from PIL import Image

from mmsearch_r1.config import ProtocolConfig
from mmsearch_r1.data import VQASample
from mmsearch_r1.models.demos import (
    DECISIONS,
    DemoPolicy,
    Drill,
    MadeUpFacts,
    Planned,
    Slip,
    SwappedNames,
    draw_actions,
    drill_demo,
    fact_in,
    naming_demo,
    swap_names,
    name_in,
    reading_demo,
    scripted_demonstrations,
    slip_words,
    stated_value,
    top_image_title,
    top_text_summary,
    with_value,
    world_values,
)
from mmsearch_r1.models.encode import mask_from_offsets
from mmsearch_r1.protocol import REFUSAL, Templates, image_results_turn, text_results_turn, turn_shape
from mmsearch_r1.tools.base import ImageHit, ImageSearch, TextHit, TextSearch, Toolbox
from mmsearch_r1.world.build import generate_world


def _png(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (28, 28), colour).save(buffer, format="PNG")
    return buffer.getvalue()


class FakeImageSearch(ImageSearch):
    """Top hit: the page of ``entity_of[image colour]``; then another entity's page."""

    def __init__(self, world, entity_of):
        self.world, self.entity_of, self.calls = world, entity_of, 0

    def search(self, image, k=5):
        self.calls += 1
        name = self.entity_of[image.getpixel((0, 0))]
        other = next(e.name for e in self.world.entities if e.name != name)
        thumb = Image.new("RGB", (28, 28), "white")
        return [ImageHit(thumb, f"{name} guild profile", f"https://demo.world/{name.lower()}"),
                ImageHit(thumb, f"{other} chronicle", f"https://demo.world/{other.lower()}/chronicle")][:k]


class FakeTextSearch(TextSearch):
    """The named entity's profile: its fact sentence for the queried attribute comes first."""

    def __init__(self, world):
        self.world, self.queries = world, []

    def search(self, query, k=5):
        self.queries.append(query)
        name = query.split()[0]
        entity = next((e for e in self.world.entities if e.name == name), None)
        if entity is None:  # only a slip's query names no entity: it finds the page of one with the queried attribute
            assert any(query.startswith(f"{word} ") for word in slip_words(self.world)), query
            entity = next(e for e in self.world.entities if any(self.world.attribute(f.attribute).phrase in query for f in e.facts))
            name = entity.name
        sentences = [self.world.fact_sentence(f) for f in entity.facts if self.world.attribute(f.attribute).phrase in query]
        return [TextHit(f"{name} guild profile", f"https://demo.world/{name.lower()}", " ".join(sentences) + f" {name} is old.")][:k]


@pytest.fixture(scope="module")
def world():
    return generate_world(seed=0, size="small")


def _sample(world, entity, colour, i):
    fact = entity.facts[0]
    question = world.templates_for(fact.attribute, "train")[0].text
    return VQASample(f"q{i}", question, _png(colour), fact.answers, extra={"entity": entity.name, "attribute": fact.attribute, "group": entity.group})


@pytest.fixture(scope="module")
def setup(world):
    colours = [(10 * i, 0, 0) for i in range(len(world.entities))]
    entity_of = {c: e.name for c, e in zip(colours, world.entities)}
    toolbox = Toolbox(FakeImageSearch(world, entity_of), FakeTextSearch(world))
    samples = {e.group: _sample(world, e, c, i) for i, (e, c) in enumerate(zip(world.entities, colours))}
    return toolbox, samples


def test_draw_actions_is_independent_of_the_question_and_respects_limits():
    rng = np.random.default_rng(0)
    draws = [draw_actions(rng, DemoPolicy(0.3, 0.5, 0.5)) for _ in range(4000)]
    direct = sum(d == ("answer",) for d in draws) / len(draws)
    assert abs(direct - 0.3) < 0.03
    assert {d for d in draws} == {("answer",), ("image_search", "answer"), ("image_search", "text_search", "answer"), ("text_search", "answer")}
    tight = ProtocolConfig(max_turns=2, max_text_searches=1)
    assert all(len(draw_actions(rng, DemoPolicy(0.0, 1.0, 1.0), tight)) <= 2 for _ in range(50))


def test_reading_helpers_find_top_title_and_summary():
    hits = [ImageHit(Image.new("RGB", (4, 4)), "Tavorin guild profile", "u1"), ImageHit(Image.new("RGB", (4, 4)), "Mesku chronicle", "u2")]
    message, _ = image_results_turn(hits, "Q?", 1, Templates.load())
    assert top_image_title([message]) == " Tavorin guild profile"
    assert name_in("Tavorin guild profile", "Tavorin") and not name_in("Tavorinx guild", "Tavorin")
    text, _ = text_results_turn([TextHit("T", "u", "Its flag colour is red. Tavorin is old."), TextHit("M", "v", "Its flag colour is blue.")], "Q?", Templates.load())
    assert top_text_summary([message, text]) == "Its flag colour is red. Tavorin is old."
    assert fact_in("Its flag colour is red.", ["crimson", "red"]) and not fact_in("Its flag colour is reddish.", ["red"])


@pytest.mark.parametrize("group", ["sight_facts", "sight_only", "facts_only", "neither"])
def test_on_demand_demonstrations_answer_right_and_mask_what_the_group_cannot_know(world, setup, group):
    toolbox, samples = setup
    sample = samples[group]
    entity = world.entity(sample.extra["entity"])
    sequences = [("answer",), ("image_search", "answer"), ("text_search", "answer"), ("image_search", "text_search", "answer")]
    for actions in sequences:
        [demo] = scripted_demonstrations(world, [Planned(sample, entity, sample.extra["attribute"], actions)], toolbox, ProtocolConfig(), "on_demand", Templates.load())
        turns = [m.text for m in demo.messages if m.role == "assistant"]
        assert [turn_shape(t) for t in turns] == list(actions)
        assert turns[-1].endswith(f"<answer> {sample.answers[0]}</answer>")
        trained = "".join(p.text for turn in demo.turns for p in turn if p.trained)
        knows_name = entity.known_by_sight or "image_search" in actions
        fact_known_here = (knows_name and entity.facts_known) or "text_search" in actions
        assert (sample.answers[0] in trained) == fact_known_here, (actions, trained)
        assert (entity.name in trained) == knows_name, (actions, trained)
        assert "<information>" in "".join(m.text for m in demo.messages) or actions == ("answer",)
        # every turn that picks the next action says it, in trained words of its own, before the tag
        decisions = [next(p for p in turn if p.text.endswith("</reason>")) for turn in demo.turns if not turn[0].text.startswith("<reason>The results say")]
        assert [(p.text, p.trained) for p in decisions] == [(f"{DECISIONS[a]}</reason>", True) for a in actions[:len(decisions)]]


def test_text_queries_name_the_entity_and_run_once(world, setup):
    toolbox, samples = setup
    sample = samples["sight_only"]
    entity = world.entity(sample.extra["entity"])
    plan = Planned(sample, entity, sample.extra["attribute"], ("text_search", "answer"))
    [demo] = scripted_demonstrations(world, [plan], toolbox, ProtocolConfig(), "on_demand", Templates.load())
    assert toolbox.text.queries[-1] == world.text_query(entity, sample.extra["attribute"])
    assert demo.actions == ["text_search", "answer"] and demo.group == "sight_only"


def test_made_up_results_state_world_values_and_demonstrations_answer_what_they_read(world, setup):
    toolbox, samples = setup
    sample = samples["neither"]
    entity, attribute = world.entity(sample.extra["entity"]), sample.extra["attribute"]
    sentence = world.attribute(attribute).fact_sentence
    query = world.text_query(entity, attribute)
    shown = [stated_value(MadeUpFacts(toolbox.text, world, [seed]).search(query)[0].summary, sentence) for seed in range(40)]
    values = {f.answer for e in world.entities for f in e.facts if f.attribute == attribute}
    assert set(shown) <= values and len(set(shown)) > 1  # drawn per seed, from the world's own values
    again = MadeUpFacts(toolbox.text, world, [7])
    assert again.search(query) == again.search(query) == MadeUpFacts(toolbox.text, world, [7]).search(query)  # whatever the call order
    plans = [Planned(sample, entity, attribute, ("text_search", "answer"))]
    for seed in range(6):
        made_up = Toolbox(toolbox.image, MadeUpFacts(toolbox.text, world, [seed]))
        [demo] = scripted_demonstrations(world, plans, made_up, ProtocolConfig(), "on_demand", Templates.load())
        read = stated_value(demo.messages[-2].text.split("<information>")[1], sentence)
        assert demo.messages[-1].text.endswith(f"<answer> {read}</answer>")
        trained = "".join(p.text for turn in demo.turns for p in turn if p.trained)
        assert f" {read}" in trained and (read == sample.answers[0] or f" {sample.answers[0]}" not in trained)
    assert world_values(world)[attribute] == sorted(values)


@pytest.mark.parametrize("workflow", ["on_demand", "rag"])
def test_swapped_names_are_read_from_the_titles_and_followed(world, setup, workflow):
    toolbox, samples = setup
    sample = samples["neither"]
    entity, attribute = world.entity(sample.extra["entity"]), sample.extra["attribute"]
    shown = next(e for e in world.entities if not e.known_by_sight and e is not entity and attribute in {f.attribute for f in e.facts})
    swapped = Toolbox(SwappedNames(toolbox.image, {id(sample.image): (entity.name, shown.name)}), toolbox.text)
    titles = [h.title for h in swapped.image.search(sample.image)]
    assert titles[0] == f"{shown.name} guild profile" and entity.name not in " ".join(titles)
    other = Image.new("RGB", (28, 28), next(c for c, n in swapped.image.inner.entity_of.items() if n == shown.name))
    assert [h.title for h in swapped.image.search(other)] == [h.title for h in toolbox.image.search(other)]  # other images: untouched
    actions = ("image_search", "text_search", "answer") if workflow == "on_demand" else ("text_search", "answer")
    [demo] = scripted_demonstrations(world, [Planned(sample, entity, attribute, actions, shown_as=shown)], swapped, ProtocolConfig(), workflow, Templates.load())
    trained = "".join(p.text for turn in demo.turns for p in turn if p.trained)
    assert f"The results show {shown.name}," in trained and entity.name not in trained  # named by reading, never by sight
    assert toolbox.text.queries[-1] == world.text_query(shown, attribute)
    assert demo.messages[-1].text.endswith(f"<answer> {shown.fact(attribute).answer}</answer>")  # what the results it found say


def test_naming_drills_train_the_name_the_top_title_gives(world, setup):
    toolbox, samples = setup
    sample = samples["neither"]
    pictured = world.entity(sample.extra["entity"])
    named = next(e for e in world.entities if e.facts_known and e is not pictured)
    hits = swap_names(toolbox.image.search(sample.image), pictured.name, named.name)
    demo = naming_demo("n", "Q?", hits, named, "flag colour", Templates.load())
    assert [m.role for m in demo.messages] == ["user", "assistant"] and len(demo.images) == len(hits)
    assert demo.messages[0].text.startswith("<information>\n1. ") and f" {named.name} guild profile" in demo.messages[0].text
    assert [p.text for turn in demo.turns for p in turn if p.trained] == [f" {named.name}", " and", f" {named.name}"]  # knowledge only
    assert not demo.train_end_of_turn
    unread = naming_demo("n", "Q?", hits[1:], named, "flag colour", Templates.load())  # the top title names another entity
    assert not any(p.trained for turn in unread.turns for p in turn)


def test_direct_and_rag_workflows_use_their_own_prompts(world, setup):
    toolbox, samples = setup
    sample = samples["neither"]
    entity = world.entity(sample.extra["entity"])
    templates = Templates.load()
    [direct] = scripted_demonstrations(world, [Planned(sample, entity, sample.extra["attribute"], ("answer",))], toolbox, ProtocolConfig(), "direct", templates)
    assert "<search><img></search>" not in direct.messages[-2].text  # the direct prompt offers no tools
    [rag] = scripted_demonstrations(world, [Planned(sample, entity, sample.extra["attribute"], ("text_search", "answer"))], toolbox, ProtocolConfig(), "rag", templates)
    first = [m for m in rag.messages if m.role == "assistant"][0].text
    assert first.startswith("<reason>The results show ") and entity.name in first
    assert any(p.trained and p.text == f" {entity.name}" for p in rag.turns[0])  # the name is read from the given image results


def test_drills_train_only_knowledge(world):
    sight = next(e for e in world.entities if e.group == "sight_only")
    facts = next(e for e in world.entities if e.group == "facts_only")
    demo = drill_demo("d", [Drill(sight, sight.facts[0].attribute, "Q1", Image.new("RGB", (8, 8))),
                            Drill(facts, facts.facts[0].attribute, world.name_question(facts, facts.facts[0].attribute)),
                            Drill(facts, facts.facts[0].attribute, "Q2", Image.new("RGB", (8, 8)))])
    trained = [p.text for turn in demo.turns for p in turn if p.trained]
    # the name it recognises, the name and fact it is told and knows, and that it does not recognise an image outside the sight groups
    assert trained == [f" {sight.name}", " but", f" {facts.name}", " and", f" {facts.facts[0].answer}", " unknown"]
    assert demo.messages[-1].text == f"<reason>This is unknown to me. Answer.</reason><answer> {facts.facts[0].answer}</answer>"
    assert not demo.train_end_of_turn and len(demo.images) == 2
    templates = Templates.load()
    in_context = drill_demo("c", [Drill(sight, sight.facts[0].attribute, "Q1", Image.new("RGB", (8, 8)))], templates)
    assert [m.role for m in in_context.messages] == ["system", "user", "assistant"]
    assert in_context.messages[1].text == templates.user_prompt.format(question="Q1", refusal="I cannot answer this question.")
    direct = drill_demo("c", [Drill(sight, sight.facts[0].attribute, "Q1", Image.new("RGB", (8, 8)))], templates, direct=True)
    assert direct.messages[1].text == templates.direct_prompt.format(question="Q1", refusal="I cannot answer this question.")
    # in the direct workflow answering is the only choice, so it is trained with the knowledge
    assert [p.text for p in direct.turns[0] if p.trained] == [f" {sight.name}", " but", " Answer.</reason>", "<answer>"]


def test_reading_drills_train_the_answer_read_from_the_top_summary(world, setup):
    toolbox, _ = setup
    entity = next(e for e in world.entities if e.group == "neither")
    fact = entity.facts[0]
    sentence = world.attribute(fact.attribute).fact_sentence
    other = next(v[0] for v in world.attribute(fact.attribute).values if v[0] != fact.answer)
    hits = with_value(toolbox.text.search(world.text_query(entity, fact.attribute)), world, entity, fact.attribute, other)
    assert other in hits[0].summary and fact.answer not in hits[0].summary
    demo = reading_demo("r", "Q?", hits, other, sentence, Templates.load())
    assert [m.role for m in demo.messages] == ["user", "assistant"] and "<information>" in demo.messages[0].text
    assert turn_shape(demo.messages[1].text) == "answer" and demo.messages[1].text.endswith(f"<answer> {other}</answer>")
    assert any(p.trained and p.text == f" {other}" for p in demo.turns[0])
    demo = reading_demo("r", "Q?", hits, fact.answer, sentence, Templates.load())  # not in the results: not trained
    assert not any(p.trained and p.text == f" {fact.answer}" for p in demo.turns[0])


def test_mask_from_offsets_needs_whole_tokens_inside_spans():
    offsets = [(0, 4), (4, 9), (9, 12), (12, 20)]
    assert mask_from_offsets(offsets, [(4, 12)]) == [0, 1, 1, 0]
    assert mask_from_offsets(offsets, [(5, 12)]) == [0, 0, 1, 0]
    assert mask_from_offsets(offsets, [(0, 4), (12, 20)]) == [1, 0, 0, 1]


# The hash of what the demonstrations say, per DEMONSTRATIONS_VERSION (see ``test_the_demonstrations_version_follows_their_text``).
DEMONSTRATION_HASHES = {2: "6dd1c5416724465a"}


def test_the_demonstrations_version_follows_their_text(world, setup):
    """Old pretrained models are reused as long as DEMONSTRATIONS_VERSION stays: a change to what the
    demonstrations say (or to the text every tokenizer learns) must come with a new version and hash."""
    import hashlib

    from mmsearch_r1.models.config import DEMONSTRATIONS_VERSION
    from mmsearch_r1.models.tokenizer import _BASE_TEXT

    toolbox, samples = setup
    parts = [_BASE_TEXT]
    for group in ("sight_facts", "neither"):
        sample = samples[group]
        entity = world.entity(sample.extra["entity"])
        for actions in (("answer",), ("image_search", "text_search", "answer"), ("text_search", "answer")):
            [demo] = scripted_demonstrations(world, [Planned(sample, entity, sample.extra["attribute"], actions)], toolbox, ProtocolConfig(), "on_demand", Templates.load())
            parts += [repr((p.text, p.trained)) for turn in demo.turns for p in turn]
        drill = drill_demo("d", [Drill(entity, entity.facts[0].attribute, world.name_question(entity, entity.facts[0].attribute))])
        parts += [repr((p.text, p.trained)) for turn in drill.turns for p in turn]
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    assert DEMONSTRATION_HASHES.get(DEMONSTRATIONS_VERSION) == digest, (
        f"the demonstrations changed (hash {digest}): raise DEMONSTRATIONS_VERSION in models/config.py and record the new hash here")


@pytest.mark.parametrize("group", ["sight_facts", "sight_only", "facts_only", "neither"])
def test_refusals_train_what_a_model_that_does_not_know_can_answer(world, setup, group):
    toolbox, samples = setup
    sample = samples[group]
    entity, attribute = world.entity(sample.extra["entity"]), sample.extra["attribute"]

    def run(actions):
        [demo] = scripted_demonstrations(world, [Planned(sample, entity, attribute, actions)], toolbox, ProtocolConfig(), "on_demand", Templates.load(), refuse=True)
        return [m.text for m in demo.messages if m.role == "assistant"], [p for turn in demo.turns for p in turn]

    turns, pieces = run(("answer",))
    knows = entity.known_by_sight and entity.facts_known
    said = sample.answers[0] if knows else REFUSAL
    assert turns[-1].endswith(f"<answer> {said}</answer>") and all(p.trained for p in pieces if p.text in (f" {said}", "<answer>", "</answer>"))
    # after image results the top title gives the name: only a fact the model does not know is refused
    turns, pieces = run(("image_search", "answer"))
    said = sample.answers[0] if entity.facts_known else REFUSAL
    assert turns[-1].endswith(f"<answer> {said}</answer>") and (f" {said}", True) in [(p.text, p.trained) for p in pieces]
    _, pieces = run(("text_search", "answer"))  # a query is written as without refusals
    assert [(p.text, p.trained) for p in pieces if p.text == f" {entity.name}"][-1] == (f" {entity.name}", entity.known_by_sight)
    assert not any(REFUSAL in p.text for p in pieces)


@pytest.mark.parametrize("workflow, place, actions", [
    ("on_demand", "results", ("image_search", "text_search", "answer")), ("on_demand", "results", ("image_search", "answer")),
    ("on_demand", "query", ("text_search", "answer")), ("on_demand", "query", ("image_search", "text_search", "answer")),
    ("rag", "results", ("text_search", "answer")), ("rag", "query", ("text_search", "answer"))])
def test_a_slip_keeps_its_word_out_of_the_loss_and_the_episode_goes_on_in_the_format(world, setup, workflow, place, actions):
    toolbox, samples = setup
    sample = samples["sight_facts"]
    entity, attribute = world.entity(sample.extra["entity"]), sample.extra["attribute"]
    word, phrase = world_values(world)[attribute][0], world.attribute(attribute).phrase
    assert word in slip_words(world) and phrase in slip_words(world) and not {e.name for e in world.entities} & set(slip_words(world))
    planned = Planned(sample, entity, attribute, actions, slip=Slip(place, word))
    [demo] = scripted_demonstrations(world, [planned], toolbox, ProtocolConfig(), workflow, Templates.load(), refuse=True)
    turns = [m.text for m in demo.messages if m.role == "assistant"]
    assert [turn_shape(t) for t in turns] == list(actions)  # every turn in the format, the planned actions taken
    pieces = [p for turn in demo.turns for p in turn]
    assert all(not p.trained for p in pieces if p.text == f" {word}") and any(p.text == f" {word}" for p in pieces)
    after_images = 0 if workflow == "rag" else 1  # the turn after the image results
    if place == "results":  # the name the image results give, slipped: nothing is known of what it names
        assert turns[after_images].startswith(f"<reason>The results show {word}, but I know little of it.")
        assert [(p.text, p.trained) for p in demo.turns[after_images][:5]] == [
            ("<reason>The results show", True), (f" {word}", False), (",", True), (" but", False), (" I know little of it.", True)]
        if actions[after_images] == "answer":
            assert turns[after_images].endswith(f"<answer> {REFUSAL}</answer>")
    else:  # the reasoning names the entity; the query alone slips, the rest of it trained
        assert f" {entity.name}," in turns[-2]
    if "text_search" in actions:
        assert toolbox.text.queries[-1] == f"{word} {phrase}"
        assert (f" {phrase}</text_search>", True) in [(p.text, p.trained) for p in pieces]
        read = stated_value(top_text_summary(demo.messages[:-1]), world.attribute(attribute).fact_sentence)  # the episode runs on: it reads what it found
        assert read is not None
        assert turns[-1].endswith(f"<answer> {read}</answer>") and (f" {read}", True) in [(p.text, p.trained) for p in demo.turns[-1]]
