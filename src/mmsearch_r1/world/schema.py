"""The demo world as typed records, and ``world.json``, the file that holds them.

A world is a set of entities (guilds, each shown by an emblem). Each entity has a made-up name, a visual
signature (how its emblem is drawn), 3-5 facts, and a knowledge group that says what the pretrained model
will know about it; the group fixes the search the question needs:

=============  ===================  ===================  ===========
group          model knows sight    model knows facts    search need
=============  ===================  ===================  ===========
sight_facts    yes                  yes                  none
sight_only     yes                  no                   text
facts_only     no                   yes                  image
neither        no                   no                   image_text
=============  ===================  ===================  ===========
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mmsearch_r1.errors import DataError

WORLD_FILE = "world.json"
FORMAT_VERSION = 1

# group -> (search need, model knows the entity by sight, model knows the entity's facts)
GROUPS: dict[str, tuple[str, bool, bool]] = {
    "sight_facts": ("none", True, True),
    "sight_only": ("text", True, False),
    "facts_only": ("image", False, True),
    "neither": ("image_text", False, False),
}


@dataclass(frozen=True)
class Signature:
    """How an entity's emblem is drawn: a shape filled with ``colour``, a ``pattern`` in ``accent`` on it,
    and a small ``mark`` in ``mark_colour`` at its centre. Colours are RGB triples."""

    shape: str
    colour: tuple[int, int, int]
    accent: tuple[int, int, int]
    pattern: str
    mark: str
    mark_colour: tuple[int, int, int]


@dataclass(frozen=True)
class Fact:
    """One attribute of an entity: ``answer`` is the gold word, ``aliases`` the other accepted spellings."""

    attribute: str
    answer: str
    aliases: tuple[str, ...] = ()

    @property
    def answers(self) -> list[str]:
        """Gold answer first, then the aliases (the order ``VQASample.answers`` uses)."""
        return [self.answer, *self.aliases]


@dataclass(frozen=True)
class Entity:
    """A guild of the world; ``slug`` is its lower-case name, used in page urls and file names."""

    name: str
    group: str
    signature: Signature
    facts: tuple[Fact, ...]

    @property
    def slug(self) -> str:
        return self.name.lower()

    @property
    def search_need(self) -> str:
        return GROUPS[self.group][0]

    @property
    def known_by_sight(self) -> bool:
        """Pretraining teaches the model to name this entity from its emblem."""
        return GROUPS[self.group][1]

    @property
    def facts_known(self) -> bool:
        """Pretraining teaches the model this entity's facts, asked by name."""
        return GROUPS[self.group][2]

    @property
    def category(self) -> str:
        return "search_free" if self.search_need == "none" else "search_required"

    def fact(self, attribute: str) -> Fact:
        for fact in self.facts:
            if fact.attribute == attribute:
                return fact
        raise KeyError(f"{self.name} has no attribute {attribute!r}")


@dataclass(frozen=True)
class QuestionTemplate:
    """A question about the entity in the image; ``split`` is ``train`` (train and test) or ``heldout``."""

    id: str
    attribute: str
    split: str
    text: str


@dataclass(frozen=True)
class Attribute:
    """An attribute as this world uses it: its query phrase, its answer words with aliases, its sentences."""

    name: str
    phrase: str
    values: tuple[tuple[str, ...], ...]
    fact_sentence: str
    name_question: str


@dataclass(frozen=True)
class RenderSettings:
    """Image sizes and the jitter every rendering gets (see ``render.render_entity``)."""

    image_size: int = 84
    thumbnail_size: int = 56
    max_rotation: float = 20.0
    max_shift: float = 0.08
    scale_range: tuple[float, float] = (0.85, 1.05)
    noise_std: float = 6.0


@dataclass
class World:
    """Everything the generator decided, as read back from ``world.json``; ``root`` is the world folder."""

    seed: int
    size: str
    render: RenderSettings
    attributes: list[Attribute]
    templates: list[QuestionTemplate]
    entities: list[Entity]
    root: Path | None = field(default=None, compare=False)

    def attribute(self, name: str) -> Attribute:
        for attribute in self.attributes:
            if attribute.name == name:
                return attribute
        raise KeyError(f"the world has no attribute {name!r}")

    def entity(self, name: str) -> Entity:
        for entity in self.entities:
            if entity.name.lower() == name.lower():
                return entity
        raise KeyError(f"the world has no entity named {name!r}")

    def in_group(self, group: str) -> list[Entity]:
        return [e for e in self.entities if e.group == group]

    def templates_for(self, attribute: str, split: str) -> list[QuestionTemplate]:
        return [t for t in self.templates if t.attribute == attribute and t.split == split]

    def text_query(self, entity: Entity, attribute: str) -> str:
        """The text query that finds a fact: ``"<entity name> <attribute phrase>"``, e.g. ``"Tavorin home city"``."""
        return f"{entity.name} {self.attribute(attribute).phrase}"

    def name_question(self, entity: Entity, attribute: str) -> str:
        """A question that names the entity (for teaching facts by name): ``"What is the home city of Tavorin?"``."""
        return self.attribute(attribute).name_question.format(name=entity.name)

    def fact_sentence(self, fact: Fact) -> str:
        """The sentence that states a fact on the entity's page: ``"Its home city is Lomarholm."``."""
        return self.attribute(fact.attribute).fact_sentence.format(value=fact.answer)

    # --- world.json ---------------------------------------------------------------------------

    def to_json(self) -> str:
        data = {
            "format_version": FORMAT_VERSION,
            "seed": self.seed,
            "size": self.size,
            "groups": {g: {"search_need": n, "known_by_sight": s, "facts_known": f} for g, (n, s, f) in GROUPS.items()},
            "render": asdict(self.render),
            "attributes": [asdict(a) for a in self.attributes],
            "templates": [asdict(t) for t in self.templates],
            "entities": [_entity_json(e) for e in self.entities],
        }
        return json.dumps(data, indent=1, sort_keys=True) + "\n"

    def save(self, out_dir: str | Path) -> Path:
        path = Path(out_dir) / WORLD_FILE
        path.write_text(self.to_json())
        return path


def _entity_json(entity: Entity) -> dict:
    data = asdict(entity)
    data.update(slug=entity.slug, search_need=entity.search_need, category=entity.category)
    return data


def _tuple3(values) -> tuple[int, int, int]:
    return tuple(int(v) for v in values)  # type: ignore[return-value]


def _entity_from_json(data: dict) -> Entity:
    sig = data["signature"]
    signature = Signature(
        shape=sig["shape"], colour=_tuple3(sig["colour"]), accent=_tuple3(sig["accent"]), pattern=sig["pattern"],
        mark=sig["mark"], mark_colour=_tuple3(sig["mark_colour"]),
    )
    facts = tuple(Fact(f["attribute"], f["answer"], tuple(f["aliases"])) for f in data["facts"])
    return Entity(name=data["name"], group=data["group"], signature=signature, facts=facts)


def load_world(world_dir: str | Path) -> World:
    """Read a world folder's ``world.json`` back into a ``World`` (``root`` set to the folder)."""
    root = Path(world_dir)
    path = root / WORLD_FILE
    if not path.is_file():
        raise DataError(f"{root} holds no {WORLD_FILE}; build a world there first with `mmsearch-r1 world build --out {root}`.")
    try:
        data = json.loads(path.read_text())
        if data.get("format_version") != FORMAT_VERSION:
            raise DataError(f"{path} has format version {data.get('format_version')}, this code reads {FORMAT_VERSION}; rebuild the world.")
        render = data["render"]
        return World(
            seed=int(data["seed"]),
            size=data["size"],
            render=RenderSettings(**{**render, "scale_range": tuple(render["scale_range"])}),
            attributes=[Attribute(a["name"], a["phrase"], tuple(tuple(v) for v in a["values"]), a["fact_sentence"], a["name_question"]) for a in data["attributes"]],
            templates=[QuestionTemplate(**t) for t in data["templates"]],
            entities=[_entity_from_json(e) for e in data["entities"]],
            root=root,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"{path} is not a valid world file ({type(error).__name__}: {error}); rebuild the world.") from None
