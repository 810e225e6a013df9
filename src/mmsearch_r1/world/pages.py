"""The world's web: a profile page and a chronicle page per entity, and a guide page per attribute.

Page layout is chosen so that text search behaves like the paper's web search on a fact lookup:

- Every entity page states its facts as "Its <attribute phrase> is <value>." among filler sentences, and
  names its entity only in the title and in closing sentences after the last fact. Pages of different
  entities are near-duplicates of each other (same phrases, same fillers), so a query must name the entity
  to reach the right page.
- Inside a page, the words of an attribute phrase appear only in the sentence stating that attribute, so
  the extractive summary for "<entity name> <phrase>" opens with the fact sentence (the other sentences it
  keeps, those naming the entity, come after it on the page).
- Guide pages share every attribute phrase but name no entity: a query without a name finds them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmsearch_r1.world.schema import Entity, World
from mmsearch_r1.world.vocab import CHRONICLE_INTRO, FILLER_SENTENCES, GUIDE_SENTENCES, NAME_SENTENCES

SITE = "https://demo.world"


@dataclass(frozen=True)
class WorldPage:
    """One page of ``pages.jsonl``; ``entity`` is the entity it is about (None for guide pages)."""

    url: str
    title: str
    text: str
    entity: str | None = None

    def to_json(self) -> dict:
        return {"url": self.url, "title": self.title, "text": self.text}


def profile_url(entity: Entity) -> str:
    return f"{SITE}/{entity.slug}"


def chronicle_url(entity: Entity) -> str:
    return f"{SITE}/{entity.slug}/chronicle"


def _pick(rng: np.random.Generator, items: tuple[str, ...], count: int) -> list[str]:
    return [items[i] for i in rng.choice(len(items), size=min(count, len(items)), replace=False)]


def _interleave(rng: np.random.Generator, facts: list[str], fillers: list[str]) -> list[str]:
    """Fact sentences in their order with fillers slotted at random places between and around them."""
    sentences = list(facts)
    for filler in fillers:
        sentences.insert(int(rng.integers(len(sentences) + 1)), filler)
    return sentences


def profile_page(world: World, entity: Entity, rng: np.random.Generator) -> WorldPage:
    """The entity's main page: every fact, fillers, and two closing sentences that name it."""
    facts = [world.fact_sentence(entity.facts[i]) for i in rng.permutation(len(entity.facts))]
    fillers = _pick(rng, FILLER_SENTENCES, 5)
    body = [fillers[0]] + _interleave(rng, facts, fillers[1:])
    closing = [s.format(name=entity.name) for s in _pick(rng, NAME_SENTENCES, 2)]
    return WorldPage(profile_url(entity), f"{entity.name} guild profile", " ".join(body + closing), entity.name)


def chronicle_page(world: World, entity: Entity, rng: np.random.Generator) -> WorldPage:
    """A near-duplicate page: one or two of the entity's facts, other fillers, one sentence naming it."""
    chosen = rng.choice(len(entity.facts), size=int(rng.integers(1, 3)), replace=False)
    facts = [world.fact_sentence(entity.facts[i]) for i in sorted(chosen)]
    body = [CHRONICLE_INTRO] + _interleave(rng, facts, _pick(rng, FILLER_SENTENCES, 3))
    closing = _pick(rng, NAME_SENTENCES, 1)[0].format(name=entity.name)
    return WorldPage(chronicle_url(entity), f"{entity.name} chronicle", " ".join(body + [closing]), entity.name)


def guide_page(world: World, attribute: str) -> WorldPage:
    """A page about an attribute in general; it names no entity."""
    phrase = world.attribute(attribute).phrase
    text = " ".join(s.format(phrase=phrase) for s in GUIDE_SENTENCES)
    slug = attribute.replace("_", "-")
    return WorldPage(f"{SITE}/guide/{slug}", f"A guide to guild {phrase}", text)


def world_pages(world: World, rng: np.random.Generator) -> list[WorldPage]:
    """All pages: per entity its profile then its chronicle, then one guide page per attribute."""
    pages: list[WorldPage] = []
    for entity in world.entities:
        pages += [profile_page(world, entity, rng), chronicle_page(world, entity, rng)]
    return pages + [guide_page(world, a.name) for a in world.attributes]
