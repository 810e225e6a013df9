"""Questions about the entity in the image: one ``VQASample`` per (rendering, template, fact).

Splits:

- ``train``: the train templates, ``per_fact`` fresh renderings for every fact of every entity;
- ``test`` (in-domain): the same templates and facts, new renderings;
- ``heldout``: new renderings and the held-out templates, which neither train nor test uses.

Every sample carries ``category`` (``search_free`` for the sight-and-facts group, else ``search_required``),
the finer ``search_need`` and, in ``extra``, the entity, attribute, knowledge group and template id.
"""

from __future__ import annotations

import io

import numpy as np

from mmsearch_r1.data.schema import VQASample
from mmsearch_r1.world.render import render_entity
from mmsearch_r1.world.schema import Entity, Fact, QuestionTemplate, World

SPLITS = ("train", "test", "heldout")
DATA_SOURCE = "demo_world"
_SPLIT_STREAM = {"train": 11, "test": 12, "heldout": 13}


def png_bytes(image) -> bytes:
    """PNG encoding of a PIL image (deterministic: same pixels, same bytes)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def make_sample(world: World, entity: Entity, fact: Fact, template: QuestionTemplate, rng: np.random.Generator, sample_id: str) -> VQASample:
    """A question about ``fact`` of ``entity``, asked with ``template`` over a fresh rendering of its emblem."""
    image = render_entity(world, entity, rng)
    return VQASample(
        id=sample_id,
        question=template.text,
        image_bytes=png_bytes(image),
        answers=fact.answers,
        data_source=DATA_SOURCE,
        category=entity.category,  # type: ignore[arg-type]
        search_need=entity.search_need,  # type: ignore[arg-type]
        extra={"entity": entity.name, "attribute": fact.attribute, "group": entity.group, "template": template.id},
    )


def split_samples(world: World, split: str, per_fact: int) -> list[VQASample]:
    """The samples of one split, in a seeded shuffled order. Each rendering has its own random stream,
    so a split does not change when another split's size does."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    template_split = "heldout" if split == "heldout" else "train"
    stream = _SPLIT_STREAM[split]
    samples = []
    for e, entity in enumerate(world.entities):
        for f, fact in enumerate(entity.facts):
            templates = world.templates_for(fact.attribute, template_split)
            for k in range(per_fact):
                rng = np.random.default_rng([world.seed, stream, e, f, k])
                template = templates[(k + int(rng.integers(len(templates)))) % len(templates)]
                samples.append(make_sample(world, entity, fact, template, rng, ""))
    order = np.random.default_rng([world.seed, stream]).permutation(len(samples))
    shuffled = [samples[i] for i in order]
    for i, sample in enumerate(shuffled):
        sample.id = f"world-{split}-{i:05d}"
    return shuffled
