"""Scripted demonstrations for pretraining: the protocol, with real tool results, and deliberately uncalibrated search.

Each demonstration is one episode written by a script instead of a model. Its sequence of actions is drawn at
random, independently of what the question needs (answer at once with ``direct_prob``; otherwise image search
first with ``image_first_prob`` else text search; after an image search, a text search with
``follow_up_prob``; with ``name_before_query``, an entity the model cannot recognise always goes to the image
first): learning *when* to search is left to reinforcement learning. The search results are
real: the episodes run through ``rollout`` (with a ``ScriptedEngine`` in place of a model) on the world's
local image and text indexes, so their contexts are exactly those a model meets, in each workflow
(``on_demand``; and, for a share of them, ``direct`` and ``rag``, the evaluation's other two workflows).

Every demonstration answers by its knowledge or by reading the results: the entity's name from the top
image-search title (under ``SwappedNames``, another entity's name, which it then follows), the fact from the
top text-search summary (under ``MadeUpFacts``, a made-up value that the demonstration copies). A piece of
text that the pretrained model cannot know at that point (a name it cannot recognise and has not read, a
fact it does not know and has not read) is kept in the context but left out of the loss, so the
demonstrations teach the protocol and the reading of results without teaching knowledge the knowledge
groups withhold.

Reasoning is kept short so that generation stays fast. It says what the model knows before it acts: the
entity's name for an entity of a sight group, and whether it knows its facts (``This is Tavorin, and I know
it.`` / ``..., but I know little of it.``), or ``This is unknown to me.`` for any other; after image results,
the name read from them (``The results show Tavorin, but I know little of it.``). These words are knowledge,
trained to be true; the action after them is still drawn at random, and the reasoning ends by saying it
(``Answer.``, ``Search images.``, ``Look it up.``; see ``decision``). They put what the model knows where the
decision is made: a decision taken before the model has named the entity cannot depend on whether it can
name it (docs/results.md, "Teaching the split").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from mmsearch_r1.errors import DataError
from mmsearch_r1.protocol import IMAGE_SEARCH_CALL, REFUSAL, Templates
from mmsearch_r1.reward import normalize_answer
from mmsearch_r1.tools.base import ImageSearch, TextSearch
from mmsearch_r1.trajectory import ImageRef, Message

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from mmsearch_r1.config import ProtocolConfig
    from mmsearch_r1.data import VQASample
    from mmsearch_r1.tools.base import ImageHit, TextHit, Toolbox
    from mmsearch_r1.world.schema import Entity, World

UNRECOGNISED = (" unknown", " to me.")  # the word that takes the place of the name, and the rest
KNOWS = {True: (" and", " I know it."), False: (" but", " I know little of it.")}  # the word after the name, and the rest
DECISIONS = {"answer": " Answer.", "image_search": " Search images.", "text_search": " Look it up."}  # the reasoning's last words


@dataclass(frozen=True)
class Piece:
    """A stretch of an assistant turn; ``trained`` says whether it counts in the loss."""

    text: str
    trained: bool = True


@dataclass
class Demonstration:
    """One scripted episode: messages as the model sees them, images in context order, trained pieces per turn."""

    sample_id: str
    group: str
    messages: list[Message]
    images: list["Image.Image"]
    turns: list[list[Piece]] = field(default_factory=list)  # one entry per assistant message, in order
    actions: list[str] = field(default_factory=list)
    train_end_of_turn: bool = True  # whether each assistant turn's <|im_end|> counts in the loss

    def add_turn(self, pieces: list[Piece], action: str) -> None:
        self.messages.append(Message("assistant", ["".join(p.text for p in pieces)]))
        self.turns.append(pieces)
        self.actions.append(action)


@dataclass(frozen=True)
class DemoPolicy:
    """The random action choices of the scripted demonstrations (see the module docstring)."""

    direct_prob: float = 0.3
    image_first_prob: float = 0.5
    follow_up_prob: float = 0.5
    fitting_prob: float = 0.0


def draw_actions(rng: "np.random.Generator", choice: DemoPolicy, protocol: "ProtocolConfig | None" = None, need: str | None = None) -> tuple[str, ...]:
    """A sequence of actions; a draw the protocol's limits forbid becomes a direct answer.

    Whether to search is drawn independently of need. A search makes the searches the question ``need`` s
    with ``fitting_prob`` (when it needs any), and is drawn at random otherwise.

    >>> import numpy as np
    >>> draw_actions(np.random.default_rng(0), DemoPolicy(direct_prob=1.0))
    ('answer',)
    >>> draw_actions(np.random.default_rng(0), DemoPolicy(direct_prob=0.0, fitting_prob=1.0), need="image_text")
    ('image_search', 'text_search', 'answer')
    """
    from mmsearch_r1.oracle import NEED_ACTIONS

    if rng.random() < choice.direct_prob:
        return ("answer",)
    if choice.fitting_prob > 0 and need not in (None, "none") and rng.random() < choice.fitting_prob:
        actions = NEED_ACTIONS[need]
    elif rng.random() < choice.image_first_prob:
        actions = ("image_search", "text_search", "answer") if rng.random() < choice.follow_up_prob else ("image_search", "answer")
    else:
        actions = ("text_search", "answer")
    return actions if protocol is None or allowed(actions, protocol) else ("answer",)


def sample_entity(sample, world: "World") -> tuple["Entity", str]:
    """The entity and attribute a world question is about (from the sample's ``extra``)."""
    try:
        return world.entity(sample.extra["entity"]), sample.extra["attribute"]
    except KeyError:
        raise DataError(f"sample {sample.id} names no entity/attribute of this world in its extra_info; pretrain on the world's own train.parquet.") from None


def name_in(title: str, name: str) -> bool:
    """Whether ``title`` names the entity (a whole word, any case)."""
    return name.lower() in normalize_answer(title).split()


def fact_in(summary: str, answers: list[str]) -> bool:
    """Whether ``summary`` states one of the gold answers (as a whole word or phrase).

    >>> fact_in("Its flag colour is red. Tavorin is old.", ["red", "crimson"]), fact_in("Its flag is bored.", ["red"])
    (True, False)
    """
    golds = [normalize_answer(a) for a in answers]
    return any(f" {g} " in f" {normalize_answer(summary)} " for g in golds if g)


# --- the turns, as pieces --------------------------------------------------------------------------


def first_thoughts(name: str, recognised: bool, knows_facts: bool = False, drill: bool = False) -> list[Piece]:
    """The first turn's reasoning: what the model recognises, and whether it knows the entity's facts.

    The name, or ``unknown`` for an image it does not recognise, stands in the same place, the word after
    ``This is``, where naming looks at the image. A ``drill`` trains only the words that are knowledge.

    >>> "".join(p.text for p in first_thoughts("Tavorin", True, knows_facts=True))
    '<reason>This is Tavorin, and I know it.'
    >>> "".join(p.text for p in first_thoughts("Tavorin", False))
    '<reason>This is unknown to me.'
    """
    if not recognised:
        word, rest = UNRECOGNISED
        return [Piece("<reason>This is", not drill), Piece(word), Piece(rest, not drill)]
    return [Piece("<reason>This is", not drill)] + named(name, True, knows_facts, drill)


def results_show(name: str, knows_name: bool, knows_facts: bool) -> list[Piece]:
    """The reasoning after image results: the name the top title gives, and whether the model knows its facts."""
    return [Piece("<reason>The results show")] + named(name, knows_name, knows_facts)


def named(name: str, knows_name: bool, knows_facts: bool, drill: bool = False) -> list[Piece]:
    """`` {name}, and I know it.`` or `` {name}, but I know little of it.``.

    Whether the model knows an entity's facts is knowledge too, said in the word after the name (trained
    only where the name is), so that the choice between answering and searching that follows can rest on it.
    """
    word, rest = KNOWS[knows_facts]
    return [Piece(f" {name}", knows_name), Piece(",", not drill), Piece(word, knows_name), Piece(rest, not drill)]


def decision(action: str, trained: bool = True) -> Piece:
    """The last words of the reasoning: the action about to be taken (``DECISIONS``), then ``</reason>``.

    The action's tag then follows from these words. Without them the choice fell on the tag's first token,
    where ``<answer>`` (which ends every episode, after every reading) is by far the likeliest: sampled, a
    turn often opened ``<answer>`` and went on as the search it meant (``<answer><img></search>``), an invalid
    action. A word of its own, said only where the choice is made, carries the choice alone.

    >>> decision("image_search").text
    ' Search images.</reason>'
    """
    return Piece(f"{DECISIONS[action]}</reason>", trained)


def naming_turn(head: list[Piece], name: str, knows_name: bool, action: str, fact: str = "", phrase: str = "", knows_fact: bool = False,
                refuse: bool = False) -> list[Piece]:
    """The reasoning ``head`` then an answer (``fact``), a text query (``name phrase``) or an image search.

    Names and answers are always written after a space, as they stand in titles, summaries and questions,
    so that they are the same tokens there and here: reading a result is copying a token, not translating.
    An answer the model cannot know is left out of the loss, or with ``refuse`` replaced by the refusal the
    prompt asks for (``REFUSAL``), trained: what a model that does not know can write. (A name in the query
    that the model cannot know stays untrained: a query without it, trained, made the model leave known names
    out too; docs/model.md.)
    """
    head = head + [decision(action)]
    if action == "answer":
        if refuse and not (knows_name and knows_fact):
            return head + [Piece("<answer>"), Piece(f" {REFUSAL}"), Piece("</answer>")]
        return head + [Piece("<answer>"), Piece(f" {fact}", knows_name and knows_fact), Piece("</answer>")]
    if action == "image_search":
        return head + [Piece(IMAGE_SEARCH_CALL)]
    return head + [Piece("<text_search>"), Piece(f" {name}", knows_name), Piece(f" {phrase}</text_search>")]


def reading_turn(fact: str, sentence: str, fact_read: bool) -> list[Piece]:
    """The answer after text results: the fact sentence quoted from the summaries, then the fact.

    ``sentence`` is the attribute's fact sentence (``"Its mascot animal is the {value}."``). Quoting it makes
    reading the pattern a small transformer learns first: after the words that preceded the value in the
    results, write the word that followed them; the answer then copies the value from a few tokens back.
    """
    head, tail = sentence.split("{value}")
    return [Piece("<reason>The results say:"), Piece(f" {head.strip()}"), Piece(f" {fact}", fact_read), Piece(f"{tail}</reason><answer>"),
            Piece(f" {fact}", fact_read), Piece("</answer>")]


# --- demonstrations through the rollout ------------------------------------------------------------


class MemoImageSearch(ImageSearch):
    """An image search that runs once per image object and then repeats its results (pretraining only)."""

    def __init__(self, inner: ImageSearch):
        self.inner, self._memo = inner, {}

    def search(self, image: "Image.Image", k: int = 5) -> list["ImageHit"]:
        key = (id(image), k)
        if key not in self._memo:
            self._memo[key] = (image, self.inner.search(image, k))  # keeping the image keeps its id unique
        return self._memo[key][1]


class MemoTextSearch(TextSearch):
    """A text search that runs once per query and then repeats its results (pretraining only)."""

    def __init__(self, inner: TextSearch):
        self.inner, self._memo = inner, {}

    def search(self, query: str, k: int = 5) -> list["TextHit"]:
        if (query, k) not in self._memo:
            self._memo[(query, k)] = self.inner.search(query, k)
        return self._memo[(query, k)]


class SwappedNames(ImageSearch):
    """An image search whose results, for chosen question images, give an entity's titles another entity's
    name and that entity's titles the first's (pretraining only).

    ``swaps`` maps ``id(question image)`` to the two names. The demonstration then reads the swapped name
    from the top title and goes on with that entity (its query, its facts): naming an entity the model cannot
    recognise is right only by copying the title, never by recognising the emblem, which its knowledge group
    withholds (docs/model.md, "Reading names").
    """

    def __init__(self, inner: ImageSearch, swaps: dict[int, tuple[str, str]]):
        self.inner, self.swaps = inner, swaps

    def search(self, image: "Image.Image", k: int = 5) -> list["ImageHit"]:
        hits = self.inner.search(image, k)
        return swap_names(hits, *self.swaps[id(image)]) if id(image) in self.swaps else hits


def swap_names(hits: list["ImageHit"], a: str, b: str) -> list["ImageHit"]:
    """The hits with the names ``a`` and ``b`` swapped in their titles (whole words, any case, as ``name_in`` finds them).

    >>> from mmsearch_r1.tools.base import ImageHit
    >>> [h.title for h in swap_names([ImageHit(None, "Tavorin guild profile", "u"), ImageHit(None, "(mesku) chronicle, Tavorinx", "v")], "Tavorin", "Mesku")]
    ['Mesku guild profile', '(Tavorin) chronicle, Tavorinx']
    """
    import re
    from dataclasses import replace

    swapped = {a.lower(): b, b.lower(): a}
    pattern = re.compile(rf"\b({re.escape(a)}|{re.escape(b)})\b", re.IGNORECASE)
    return [replace(h, title=pattern.sub(lambda m: swapped[m.group(0).lower()], h.title)) for h in hits]


class MadeUpFacts(TextSearch):
    """A text search whose results state made-up values: every fact sentence of every entity a title names
    says a value drawn from the world's values of that attribute (pretraining only).

    Demonstrations that read these results can only be right by copying what the results say: they teach
    reading, never a fact a knowledge group withholds, and give the model no memorised value to fall back on.
    The values are drawn from ``seed`` and the query, so that the concurrent tool calls of a rollout, whatever
    order they run in, give the same results on every run (pretraining plans its batches before training, and
    a resumed run plans them again).
    """

    def __init__(self, inner: TextSearch, world: "World", seed: Sequence[int]):
        self.inner, self.world, self.seed = inner, world, list(seed)
        self.values = world_values(world)

    def search(self, query: str, k: int = 5) -> list["TextHit"]:
        import numpy as np

        rng = np.random.default_rng([*self.seed, int.from_bytes(hashlib.sha1(query.encode()).digest()[:4], "big")])
        hits = self.inner.search(query, k)
        for entity in self.world.entities:
            if any(name_in(h.title, entity.name) for h in hits):
                for fact in entity.facts:
                    values = self.values[fact.attribute]
                    hits = with_value(hits, self.world, entity, fact.attribute, values[int(rng.integers(len(values)))])
        return hits


def world_values(world: "World") -> dict[str, list[str]]:
    """Each attribute's values that some entity of the world has (words its tokenizer knows well), sorted:
    the made-up values of pretraining are drawn from these."""
    values: dict[str, set[str]] = {}
    for entity in world.entities:
        for fact in entity.facts:
            values.setdefault(fact.attribute, set()).add(fact.answer)
    return {attribute: sorted(v) for attribute, v in values.items()}


def answer_words(world: "World") -> list[str]:
    """Every attribute's values in the world (``world_values``), in one sorted list: the words of copy drills."""
    return sorted({value for values in world_values(world).values() for value in values})


def stated_value(summary: str, sentence: str) -> str | None:
    """The value ``summary`` states in the fact sentence ``sentence`` (``"Its flag colour is {value}."``), if any.

    >>> stated_value("Its flag colour is red. Tavorin is old.", "Its flag colour is {value}."), stated_value("Tavorin.", "Its flag colour is {value}.")
    ('red', None)
    """
    import re

    head, tail = (re.escape(part) for part in sentence.split("{value}"))
    found = re.search(head + r"(\w+)" + tail, summary)
    return found.group(1) if found else None


@dataclass(frozen=True)
class Planned:
    """What one demonstration is about and the actions its assistant turns take."""

    sample: "VQASample"
    entity: "Entity"
    attribute: str
    actions: tuple[str, ...]
    shown_as: "Entity | None" = None  # the entity the image results name instead (``SwappedNames``)
    slip: "Slip | None" = None  # a wrong word written where a name goes, and the episode goes on from it


SLIP_PLACES = ("results", "query")


@dataclass(frozen=True)
class Slip:
    """A wrong word where the demonstration would write the entity's name: after image results (``results``:
    ``The results show {word},`` and the query that follows, if any) or in a text query alone (``query``).

    The word is kept out of the loss and everything after it is trained as usual, so the demonstration
    teaches no wrong name, only how an episode goes on in the format after one. Sampled at temperature 1, a
    tiny model sometimes writes a word of the question or an answer there, and then, having never seen an
    episode go on from such a word, closes the turn with the wrong tag (docs/model.md, "Slips and copy drills in
    every epoch"). After a slipped query the episode runs on as any other: its answer reads the top summary.
    """

    place: str
    word: str


def slip_words(world: "World") -> list[str]:
    """The words a slip writes: the world's answer words and attribute phrases (never a name), sorted.

    >>> from mmsearch_r1.world.build import generate_world
    >>> words = slip_words(generate_world(seed=0, size="small"))
    >>> "mascot animal" in words, any(e.name in words for e in generate_world(seed=0, size="small").entities)
    (True, False)
    """
    return sorted(set(answer_words(world)) | {a.phrase for a in world.attributes})


WORKFLOW_ACTIONS = {"direct": ("answer",), "rag": ("text_search", "answer")}  # the model's turns; rag's image search is the environment's


def top_image_title(messages: list[Message]) -> str | None:
    """The title next to the first thumbnail (context image 1) in the messages, if image results are there."""
    for message in messages:
        parts = message.content
        for i, part in enumerate(parts):
            if isinstance(part, ImageRef) and part.index == 1 and i + 1 < len(parts) and isinstance(parts[i + 1], str):
                return parts[i + 1].split("\n")[0]
    return None


def top_text_summary(messages: list[Message]) -> str | None:
    """The first summary of the latest text results (the line after the first numbered item), if any."""
    for message in reversed(messages):
        text = message.text
        if message.role == "user" and "<information>\n1. " in text and not any(isinstance(p, ImageRef) for p in message.content):
            lines = text.split("<information>\n", 1)[1].split("\n")
            return lines[1] if len(lines) > 1 else ""
    return None


class DemoScript:
    """The scripted policy behind the demonstrations: ``reply`` writes each turn, keeping its trained pieces.

    Run it with ``rollout`` and a ``ScriptedEngine(script.reply)``: the episodes then have exactly the
    contexts, feedback turns and tool results a model gets in that workflow. ``reply`` reads the name from
    the top image-search title and the fact from the top text-search summary present in the context (what
    that summary states, which under ``MadeUpFacts`` is not the world's fact).
    """

    def __init__(self, world: "World", plans: list[Planned], refuse: bool = False):
        self.world, self.refuse = world, refuse
        self.plans = {id(p.sample.image): p for p in plans}
        if len(self.plans) != len(plans):
            raise ValueError("each sample may appear once per scripted rollout")
        self.pieces: dict[tuple[int, int], list[Piece]] = {}

    def reply(self, context) -> str:
        plan = self.plans[id(context.images[0])]
        turn = sum(m.role == "assistant" for m in context.messages)
        action = plan.actions[turn]
        entity, fact = plan.entity, plan.sample.answers[0]
        attribute = self.world.attribute(plan.attribute)
        title, summary = top_image_title(context.messages), top_text_summary(context.messages)
        if title is not None and plan.shown_as is not None and name_in(title, plan.shown_as.name):  # the top title names another entity: go on with it
            entity, fact = plan.shown_as, plan.shown_as.fact(plan.attribute).answer
        knows_name = entity.known_by_sight or (title is not None and name_in(title, entity.name))
        knows_facts = entity.facts_known
        name, slip = entity.name, plan.slip
        if slip is not None and slip.place == "results" and title is not None and summary is None:
            name, knows_name, knows_facts = slip.word, False, False  # no entity is named: nothing is known of it
        head = first_thoughts(name, entity.known_by_sight, knows_facts) if title is None else results_show(name, knows_name, knows_facts)
        if action == "answer" and summary is not None:
            read = stated_value(summary, attribute.fact_sentence)
            pieces = reading_turn(read or fact, attribute.fact_sentence, read is not None)
        elif slip is not None and slip.place == "query" and action == "text_search":
            pieces = naming_turn(head, slip.word, False, action, phrase=attribute.phrase)
        else:
            pieces = naming_turn(head, name, knows_name, action, fact=fact, phrase=attribute.phrase, knows_fact=knows_facts, refuse=self.refuse)
        self.pieces[(id(context.images[0]), turn)] = pieces
        return "".join(p.text for p in pieces)

    def demonstration(self, trajectory) -> Demonstration:
        """The demonstration a finished scripted episode is; raises if it did not go as planned."""
        plan = self.plans[id(trajectory.images[0])]
        if tuple(trajectory.actions) != plan.actions or trajectory.end_reason != "answer":
            raise ValueError(f"scripted episode {trajectory.sample_id} took {trajectory.actions} ({trajectory.end_reason}), not {plan.actions}")
        turns = [self.pieces[(id(trajectory.images[0]), t)] for t in range(len(plan.actions))]
        group = plan.entity.group
        return Demonstration(trajectory.sample_id, group, trajectory.messages, trajectory.images, turns, list(plan.actions))


def scripted_demonstrations(world: "World", plans: list[Planned], toolbox: "Toolbox", protocol: "ProtocolConfig", workflow: str, templates: Templates,
                            refuse: bool = False) -> list[Demonstration]:
    """Run the planned episodes of one workflow through ``rollout`` with the scripted policy (``refuse``: see ``naming_turn``)."""
    from mmsearch_r1.engines.config import SamplingConfig
    from mmsearch_r1.engines.scripted import ScriptedEngine
    from mmsearch_r1.rollout import rollout

    script = DemoScript(world, plans, refuse)
    trajectories = rollout([p.sample for p in plans], ScriptedEngine(script.reply), toolbox, protocol=protocol,
                           sampling=SamplingConfig(), workflow=workflow, templates=templates)
    return [script.demonstration(t) for t in trajectories]


@dataclass(frozen=True)
class Drill:
    """One knowledge question of a drill: an image question (sight) or a question naming the entity (facts)."""

    entity: "Entity"
    attribute: str
    question: str
    image: "Image.Image | None" = None


def drill_demo(drill_id: str, drills: list[Drill], templates: Templates | None = None, *, direct: bool = False) -> Demonstration:
    """Knowledge questions answered directly in one chat; only knowledge is trained (and, with ``direct``, the choice to answer).

    The trained pieces are the words of the reasoning that are knowledge (the entity's name, or ``unknown``
    for an image of an entity outside the sight groups; ``and`` / ``but``, whether it knows the facts), and
    the fact (for a fact-group entity whose name the model knows at that point). The action around the
    fact, and the end-of-turn tokens, are left out of the loss, so drills teach what the model knows
    without teaching it to answer rather than search.

    Without ``templates`` the questions are packed bare, many to a chat (cheap); with them, each question
    is asked in the protocol's own opening (system message and on-demand prompt), as an episode starts,
    so that what the drills teach carries over to the distance and wording of a real first turn. With
    ``direct`` it is asked in the direct workflow's prompt, which offers no tools, and the choice to answer
    is trained too: there it is the only choice, so training it teaches the prompt, not to skip search.
    """
    demo = Demonstration(drill_id, "drill", [], [], train_end_of_turn=False)
    for drill in drills:
        question = drill.question
        if templates is not None:
            if not demo.messages and templates.system:
                demo.messages.append(Message("system", [templates.system]))
            question = (templates.direct_prompt if direct else templates.user_prompt).format(question=question, refusal=REFUSAL)
        content: list = [ImageRef(len(demo.images)), question] if drill.image is not None else [question]
        demo.messages.append(Message("user", content))
        if drill.image is not None:
            demo.images.append(drill.image)
        entity = drill.entity
        knows_name = drill.image is None or entity.known_by_sight
        fact = entity.fact(drill.attribute).answer
        pieces = first_thoughts(entity.name, knows_name, entity.facts_known, drill=True)
        pieces += [decision("answer", direct), Piece("<answer>", direct), Piece(f" {fact}", knows_name and entity.facts_known), Piece("</answer>", False)]
        demo.add_turn(pieces, "answer")
    return demo


def reading_demo(drill_id: str, question: str, hits: list["TextHit"], answer: str, sentence: str, templates: Templates) -> Demonstration:
    """Reading practice: one chat of text results and the question, then ``answer`` read from them.

    The chat is the episode's last step alone (the text-results feedback turn and the reading turn), so it
    is cheap; the whole reading turn is trained, the answer only when the top summary states it.
    """
    from mmsearch_r1.protocol import text_results_turn

    message, _ = text_results_turn(hits, question, templates)
    demo = Demonstration(drill_id, "reading", [message], [])
    demo.add_turn(reading_turn(answer, sentence, bool(hits) and fact_in(hits[0].summary, [answer])), "answer")
    return demo


COPY_PROMPT = "Repeat:"


def copy_demo(drill_id: str, words: Sequence[str]) -> Demonstration:
    """Copying practice: ``Repeat:`` and a list of words, then the same words again, all trained (the end of
    the turn too, as in reading drills).

    Every word is right only by copying, so these short chats teach, early and densely, the pattern that
    reading results takes: find where the words just written stood before, and write the word that followed
    them there. Pretraining draws the words with repeats, so a word may stand twice and only the words
    before it tell which comes next, as in results that say ``is`` many times. The words are the world's
    answer words, so no name is ever followed by a random word (copy drills with the entities' names among
    the words broke the attribute a query names, docs/model.md, "Copy drills").

    >>> demo = copy_demo("c", ["red", "salt"])
    >>> demo.messages[0].text, demo.messages[1].text, [p.trained for p in demo.turns[0]]
    ('Repeat: red salt', ' red salt', [True])
    """
    said = "".join(f" {w}" for w in words)
    demo = Demonstration(drill_id, "copy", [Message("user", [COPY_PROMPT + said])], [])
    demo.add_turn([Piece(said)], "answer")
    return demo


def naming_demo(drill_id: str, question: str, hits: list["ImageHit"], entity: "Entity", phrase: str, templates: Templates) -> Demonstration:
    """Name-reading practice: one chat of image results and the question, then the name the top title gives
    and a text query with it (``results show`` as in an episode).

    The name is trained where the top title gives it, and whether the model knows that entity's facts; the
    decision to look it up is not. Pretraining shows titles naming an entity drawn at random in place of
    the pictured one (``swap_names``), so that the name comes from reading, not from the thumbnails.
    """
    from mmsearch_r1.protocol import image_results_turn

    message, images = image_results_turn(hits, question, 0, templates)
    demo = Demonstration(drill_id, "naming", [message], images, train_end_of_turn=False)
    read = bool(hits) and name_in(hits[0].title, entity.name)
    pieces = [Piece("<reason>The results show", False)] + named(entity.name, read, entity.facts_known, drill=True)
    pieces += [decision("text_search", False), Piece("<text_search>", False), Piece(f" {entity.name}", read), Piece(f" {phrase}</text_search>", False)]
    demo.add_turn(pieces, "text_search")
    return demo


def with_value(hits: list["TextHit"], world: "World", entity: "Entity", attribute: str, value: str) -> list["TextHit"]:
    """The hits with the entity's fact sentence for ``attribute`` stating ``value`` instead, on its own pages.

    Reading drills show made-up values, so that they teach copying from the results and never the fact
    itself (which would give the model facts its knowledge group withholds).

    >>> from mmsearch_r1.tools.base import TextHit
    >>> from mmsearch_r1.world.build import generate_world
    >>> world = generate_world(seed=0, size="small")
    >>> entity = world.entities[0]; fact = entity.facts[0]
    >>> hits = [TextHit(f"{entity.name} guild profile", "u", world.fact_sentence(fact) + " More."), TextHit("Other", "v", world.fact_sentence(fact))]
    >>> shown = with_value(hits, world, entity, fact.attribute, "zzz")
    >>> "zzz" in shown[0].summary and fact.answer not in shown[0].summary, shown[1] == hits[1]
    (True, True)
    """
    from dataclasses import replace

    true = world.fact_sentence(entity.fact(attribute))
    made_up = world.attribute(attribute).fact_sentence.format(value=value)
    return [replace(h, summary=h.summary.replace(true, made_up)) if name_in(h.title, entity.name) else h for h in hits]


def allowed(actions: tuple[str, ...], protocol: "ProtocolConfig") -> bool:
    """Whether an action sequence fits the protocol's limits."""
    return (
        len(actions) <= protocol.max_turns
        and actions.count("image_search") <= protocol.max_image_searches
        and actions.count("text_search") <= protocol.max_text_searches
    )
