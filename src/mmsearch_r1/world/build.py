"""Generate a demo world and write its folder.

A world folder holds::

    world.json          entities (name, group, signature, facts), attributes, question templates, render settings
    train.parquet       training questions (veRL/FVQA layout, ``category`` and ``extra_info.search_need``)
    test.parquet        in-domain test questions (new renderings)
    heldout.parquet     held-out questions (new renderings, held-out templates)
    pages.jsonl         the web pages (url, title, text)
    thumbnails/         one PNG per thumbnail; thumbnails/metadata.jsonl gives each file's title and url
    text_index/         BM25 index over pages.jsonl (``LocalTextSearch``)
    image_index/        embedding index over the thumbnails (``LocalImageSearch``)

Everything is drawn from numpy generators seeded by ``[seed, stream, ...]`` (one stream per purpose), so
the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mmsearch_r1.errors import ConfigError
from mmsearch_r1.progress import progress_bar
from mmsearch_r1.world.config import WorldConfig
from mmsearch_r1.world.names import city_names, entity_names
from mmsearch_r1.world.render import choose_signatures, render_entity
from mmsearch_r1.world.schema import GROUPS, Attribute, Entity, Fact, QuestionTemplate, RenderSettings, World
from mmsearch_r1.world.vocab import ATTRIBUTES, CHRONICLE_INTRO, FILLER_SENTENCES, GUIDE_SENTENCES, NAME_SENTENCES

if TYPE_CHECKING:
    from PIL import Image

    from mmsearch_r1.world.pages import WorldPage

# One random stream per purpose, so that changing one part of the world leaves the others as they were.
STREAM_NAMES, STREAM_CITIES, STREAM_GROUPS, STREAM_FACTS, STREAM_SIGNATURES, STREAM_PAGES, STREAM_THUMBNAILS = range(1, 8)
OUTPUTS = ("world.json", "train.parquet", "test.parquet", "heldout.parquet", "pages.jsonl", "thumbnails", "text_index", "image_index")


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


def _resolve(size: str | None, cfg: WorldConfig | None) -> WorldConfig:
    cfg = cfg or WorldConfig()
    if size is not None:
        if size not in ("small", "default"):
            raise ConfigError(f"world size `{size}` is unknown; use small or default.")
        cfg = cfg.model_copy(update={"size": size})
    if cfg.min_facts > cfg.max_facts:
        raise ConfigError(f"world.min_facts ({cfg.min_facts}) is above world.max_facts ({cfg.max_facts}); make min_facts <= max_facts.")
    return cfg


def _vocabulary_words() -> set[str]:
    """Every word the world's fixed texts use (lower case): no name may be one of them."""
    texts = [w for spec in ATTRIBUTES for value in spec.values for w in value]
    for spec in ATTRIBUTES:
        texts += [spec.phrase, spec.fact_sentence, spec.name_question, *spec.train_templates, *spec.heldout_templates]
    texts += [*FILLER_SENTENCES, *NAME_SENTENCES, *GUIDE_SENTENCES, CHRONICLE_INTRO, "guild profile chronicle guide"]
    return {word.lower() for text in texts for word in re.findall(r"[A-Za-z]+", text)}


def _attributes(seed: int, n_cities: int, taken: set[str]) -> list[Attribute]:
    cities = city_names(_rng(seed, STREAM_CITIES), n_cities, taken)
    out = []
    for spec in ATTRIBUTES:
        values = tuple((city,) for city in cities) if spec.name == "home_city" else spec.values
        out.append(Attribute(spec.name, spec.phrase, values, spec.fact_sentence, spec.name_question))
    return out


def _templates() -> list[QuestionTemplate]:
    templates = []
    for spec in ATTRIBUTES:
        for split, texts in (("train", spec.train_templates), ("heldout", spec.heldout_templates)):
            templates += [QuestionTemplate(f"{spec.name}/{split}/{i}", spec.name, split, text) for i, text in enumerate(texts)]
    return templates


def _facts(rng: np.random.Generator, attributes: list[Attribute], groups: list[str], low: int, high: int) -> list[tuple[Fact, ...]]:
    """Each entity's facts: ``low``-``high`` attributes drawn at random; values dealt from shuffled decks per
    (group, attribute), so that within a group every value of an attribute is about equally common and the
    best blind guess is right about 1 time in the vocabulary size."""
    chosen = [sorted(rng.choice(len(attributes), size=min(int(rng.integers(low, high + 1)), len(attributes)), replace=False)) for _ in groups]
    values: dict[tuple[int, int], tuple[str, ...]] = {}
    for group in dict.fromkeys(groups):
        for a, attribute in enumerate(attributes):
            holders = [e for e, g in enumerate(groups) if g == group and a in chosen[e]]
            deck = [attribute.values[i] for _ in range(len(holders) // len(attribute.values) + 1) for i in rng.permutation(len(attribute.values))]
            values.update({(e, a): deck[k] for k, e in enumerate(holders)})
    return [tuple(Fact(attributes[a].name, values[e, a][0], tuple(values[e, a][1:])) for a in chosen[e]) for e in range(len(groups))]


def generate_world(seed: int = 0, size: str | None = None, cfg: WorldConfig | None = None) -> World:
    """Draw a world (no files): names, knowledge groups, facts, signatures and templates.

    >>> world = generate_world(seed=0, size="small")
    >>> len(world.entities), sorted({e.group for e in world.entities}) == sorted(GROUPS)
    (20, True)
    """
    cfg = _resolve(size, cfg)
    n = cfg.preset("entities")
    taken = _vocabulary_words()
    attributes = _attributes(seed, cfg.preset("cities"), taken)
    names = entity_names(_rng(seed, STREAM_NAMES), n, taken)
    # Groups are dealt round-robin over a shuffled order: sizes differ by at most one.
    group_names = list(GROUPS)
    position = np.argsort(_rng(seed, STREAM_GROUPS).permutation(n))
    groups = [group_names[int(p) % len(group_names)] for p in position]
    signatures = choose_signatures(_rng(seed, STREAM_SIGNATURES), n)
    facts = _facts(_rng(seed, STREAM_FACTS), attributes, groups, cfg.min_facts, cfg.max_facts)
    entities = [Entity(names[i], groups[i], signatures[i], facts[i]) for i in range(n)]
    render = RenderSettings(
        image_size=cfg.image_size, thumbnail_size=cfg.thumbnail_size, max_rotation=cfg.max_rotation,
        max_shift=cfg.max_shift, noise_std=cfg.noise_std,
    )
    return World(seed=seed, size=cfg.size, render=render, attributes=attributes, templates=_templates(), entities=entities)


# --- writing a world folder ------------------------------------------------------------------------


def thumbnail_items(world: World, pages: list["WorldPage"], per_entity: int) -> list[tuple[str, "Image.Image", str, str]]:
    """(file name, image, title, url) of every thumbnail: per entity, renderings linked in turn to its pages."""
    by_entity: dict[str, list] = {}
    for page in pages:
        if page.entity is not None:
            by_entity.setdefault(page.entity, []).append(page)
    items = []
    for e, entity in enumerate(world.entities):
        own = by_entity[entity.name]
        for k in range(per_entity):
            rng = np.random.default_rng([world.seed, STREAM_THUMBNAILS, e, k])
            image = render_entity(world, entity, rng, world.render.thumbnail_size)
            page = own[k % len(own)]
            items.append((f"{entity.slug}_{k}.png", image, page.title, page.url))
    return items


def _clear(out: Path) -> None:
    """Remove the outputs of an earlier build (only the names a world build writes)."""
    for name in OUTPUTS:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def _write_thumbnails(items: list, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for file_name, image, title, url in items:
        image.save(folder / file_name, format="PNG")
        lines.append(json.dumps({"file_name": file_name, "title": title, "url": url}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")


def build_world(out_dir: str | Path, seed: int = 0, size: str | None = None, *, cfg: WorldConfig | None = None, progress: bool = False) -> Path:
    """Generate a world and write its folder (see the module docstring); returns the folder.

    ``size`` (small | default) wins over ``cfg.size``; the other settings come from ``cfg`` (defaults when None).
    The same ``seed`` and settings give byte-identical files.
    """
    from mmsearch_r1.data import write_parquet
    from mmsearch_r1.world.pages import world_pages
    from mmsearch_r1.world.questions import split_samples

    cfg = _resolve(size, cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _clear(out)
    world = generate_world(seed, cfg=cfg)
    per_fact = {"train": cfg.preset("train_questions_per_fact"), "test": cfg.test_questions_per_fact, "heldout": cfg.heldout_questions_per_fact}
    steps = ["pages", "thumbnails", *per_fact, "indexes"] if cfg.build_indexes else ["pages", "thumbnails", *per_fact]
    labels = iter([*steps[1:], "done"])
    with progress_bar(f"world: {steps[0]}", len(steps), enabled=progress, transient=True) as advance:
        step = lambda: advance(description=f"world: {next(labels)}")  # noqa: E731  (finishes the current step)
        world.save(out)
        pages = world_pages(world, _rng(seed, STREAM_PAGES))
        (out / "pages.jsonl").write_text("".join(json.dumps(p.to_json()) + "\n" for p in pages))
        step()
        items = thumbnail_items(world, pages, cfg.thumbnails_per_entity)
        _write_thumbnails(items, out / "thumbnails")
        step()
        for split, count in per_fact.items():
            write_parquet(split_samples(world, split, count), out / f"{split}.parquet")
            step()
        if cfg.build_indexes:
            _build_indexes(out, items)
            step()
    return out


def _build_indexes(out: Path, items: list) -> None:
    from mmsearch_r1.tools.local_image import build_image_index
    from mmsearch_r1.tools.local_text import build_text_index

    build_text_index(out / "pages.jsonl", out / "text_index")
    build_image_index([(image, title, url) for _, image, title, url in items], out / "image_index")
