"""Checks that a built world makes search work the way the demo needs.

- ``image_recall``: how often image search on a question's image returns a page of the question's entity
  first (recall@1) or among the top k.
- ``text_fact_rate``: how often text search for ``"<entity name> <attribute phrase>"`` returns, first, a page
  of that entity whose summary opens with the fact sentence (and how often the answer is in that summary).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmsearch_r1.world.schema import World, load_world


@dataclass(frozen=True)
class ImageRecall:
    """Image search on question images: share whose top-1 (top-k) hit is a page of the right entity."""

    questions: int
    recall_at_1: float
    recall_at_k: float
    k: int


@dataclass(frozen=True)
class TextFactRate:
    """Text search for every fact: share whose top-1 hit is the entity's page with the fact sentence first,
    and share whose top-1 summary holds the answer word anywhere."""

    queries: int
    fact_first: float
    answer_in_top1: float


def _entity_of_url(url: str) -> str:
    """The entity slug of a world page url (``https://demo.world/<slug>[/chronicle]``)."""
    return url.split("://", 1)[-1].split("/")[1]


def image_recall(world_dir: str | Path, splits: tuple[str, ...] = ("test", "heldout"), k: int = 5, limit: int | None = None) -> ImageRecall:
    """Run the world's image index on the question images of ``splits`` (the first ``limit`` of each)."""
    from mmsearch_r1.data import read_parquet
    from mmsearch_r1.tools.local_image import LocalImageSearch

    root = Path(world_dir)
    load_world(root)  # a clear error when the folder holds no world
    search = LocalImageSearch(root / "image_index")
    samples = [s for split in splits for s in read_parquet(root / f"{split}.parquet")[:limit]]
    top1 = topk = 0
    for sample in samples:
        slugs = [_entity_of_url(hit.url) for hit in search.search(sample.image, k)]
        wanted = sample.extra["entity"].lower()
        top1 += bool(slugs) and slugs[0] == wanted
        topk += wanted in slugs
    n = max(len(samples), 1)
    return ImageRecall(len(samples), top1 / n, topk / n, k)


def text_fact_rate(world_dir: str | Path, world: World | None = None) -> TextFactRate:
    """Query ``"<entity name> <phrase>"`` for every fact of every entity against the world's text index."""
    from mmsearch_r1.reward import normalize_answer
    from mmsearch_r1.tools.local_text import LocalTextSearch
    from mmsearch_r1.tools.summary import split_sentences

    root = Path(world_dir)
    world = world or load_world(root)
    search = LocalTextSearch(root / "text_index")
    queries = first = holds = 0
    for entity in world.entities:
        for fact in entity.facts:
            hits = search.search(world.text_query(entity, fact.attribute), k=1)
            queries += 1
            if not hits or _entity_of_url(hits[0].url) != entity.slug:
                continue
            sentences = split_sentences(hits[0].summary)
            first += bool(sentences) and sentences[0] == world.fact_sentence(fact)
            holds += normalize_answer(fact.answer) in normalize_answer(hits[0].summary).split()
    n = max(queries, 1)
    return TextFactRate(queries, first / n, holds / n)
