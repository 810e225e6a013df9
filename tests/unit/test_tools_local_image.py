"""Local image search: the handcrafted embedder's robustness to jitter, the index round trip, inputs."""

import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from mmsearch_r1.errors import DataError
from mmsearch_r1.tools.base import ImageHit
from mmsearch_r1.tools.embedders import HandcraftedEmbedder, embedder_from_spec, soft_histograms
from mmsearch_r1.tools.local_image import LocalImageSearch, build_image_index, encode_png, read_image_items

SHAPES = ("circle", "square", "triangle", "cross", "stripes", "ring", "diamond")


def signature(i: int, shared_palettes: bool) -> tuple[str, tuple, tuple]:
    """Entity i's look: a shape and two colours; with shared palettes, seven shapes share each colour pair."""
    r = random.Random(500 + i // 7 if shared_palettes else 1000 + i)
    colours = [tuple(r.randrange(30, 230) for _ in range(3)) for _ in range(2)]
    return SHAPES[i % 7], colours[0], colours[1]


def draw(look, seed: int, side: int = 96, background: tuple[int, int] = (200, 256)) -> Image.Image:
    """One jittered rendering: background colour (each channel drawn from ``background``), shift ±8%,
    scale ±15%, rotation ±15°, pixel noise σ=8."""
    r = random.Random(seed)
    shape, c1, c2 = look
    bg = tuple(r.randrange(*background) for _ in range(3))
    big = 2 * side
    img = Image.new("RGB", (big, big), bg)
    d = ImageDraw.Draw(img)
    s = big * r.uniform(0.85, 1.15) * 0.3
    cx, cy = big / 2 + r.uniform(-0.08, 0.08) * big, big / 2 + r.uniform(-0.08, 0.08) * big
    box = [cx - s, cy - s, cx + s, cy + s]
    if shape == "circle":
        d.ellipse(box, fill=c1, outline=c2, width=int(s / 4))
    elif shape == "square":
        d.rectangle(box, fill=c1)
        d.rectangle([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2], fill=c2)
    elif shape == "triangle":
        d.polygon([(cx, cy - s), (cx - s, cy + s), (cx + s, cy + s)], fill=c1, outline=c2, width=int(s / 5))
    elif shape == "cross":
        d.rectangle([cx - s, cy - s / 3, cx + s, cy + s / 3], fill=c1)
        d.rectangle([cx - s / 3, cy - s, cx + s / 3, cy + s], fill=c2)
    elif shape == "stripes":
        for j in range(6):
            d.rectangle([cx - s + j * s / 3, cy - s, cx - s + (j + 0.5) * s / 3, cy + s], fill=c1 if j % 2 else c2)
    elif shape == "ring":
        d.ellipse(box, fill=c2)
        d.ellipse([cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2], fill=bg)
        d.ellipse([cx - s / 4, cy - s / 4, cx + s / 4, cy + s / 4], fill=c1)
    else:
        d.polygon([(cx, cy - s), (cx + s, cy), (cx, cy + s), (cx - s, cy)], fill=c1, outline=c2, width=int(s / 4))
    img = img.rotate(r.uniform(-15, 15), resample=Image.Resampling.BILINEAR, fillcolor=bg).resize((side, side), Image.Resampling.BILINEAR)
    noisy = np.asarray(img).astype(np.float32) + np.random.default_rng(seed).normal(0, 8, (side, side, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def recall_at_1(shared_palettes: bool, background: tuple[int, int] = (200, 256), n: int = 42, trials: int = 2) -> float:
    embedder = HandcraftedEmbedder()
    index = embedder.embed([draw(signature(i, shared_palettes), seed=i, background=background) for i in range(n)])
    found = 0
    for t in range(trials):
        queries = embedder.embed([draw(signature(i, shared_palettes), seed=10_000 + 1000 * t + i, background=background) for i in range(n)])
        found += int((np.argmax(queries @ index.T, axis=1) == np.arange(n)).sum())
    return found / (n * trials)


def test_recall_under_jitter_with_distinct_colours():
    assert recall_at_1(shared_palettes=False) >= 0.95


def test_recall_under_jitter_when_seven_shapes_share_each_palette():
    # Colour alone cannot separate these; shape features must. Measured 0.96 on this set.
    assert recall_at_1(shared_palettes=True) >= 0.9


def test_recall_when_the_background_colour_changes_freely():
    # Each rendering on a background of any colour (every channel 0-255). Measured 0.92 and 0.71; before the
    # background was left out of the colour blocks, 0.26 and 0.20.
    assert recall_at_1(shared_palettes=False, background=(0, 256)) >= 0.85
    assert recall_at_1(shared_palettes=True, background=(0, 256)) >= 0.6


def test_embeddings_are_unit_vectors_of_the_declared_size():
    vectors = HandcraftedEmbedder().embed([Image.new("RGB", (10, 30), "red"), Image.new("L", (64, 64), 128)])
    assert vectors.shape == (2, HandcraftedEmbedder.dim) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert HandcraftedEmbedder().embed([]).shape == (0, HandcraftedEmbedder.dim)


def test_soft_histograms_split_mass_between_neighbours():
    # 4 bins with centres 0.125, 0.375, ...; value 0.25 sits halfway between bins 0 and 1.
    hist = soft_histograms(np.array([[0.25, 0.125]]), np.array([[1.0, 2.0]]), 4, circular=True)
    assert np.allclose(hist, [[[2.5, 0.5, 0.0, 0.0]]])
    wrapped = soft_histograms(np.array([[0.0]]), np.array([[1.0]]), 4, circular=True)
    assert np.allclose(wrapped, [[[0.5, 0.0, 0.0, 0.5]]])


def test_index_round_trip_returns_thumbnails_titles_urls(tmp_path):
    looks = [signature(i, False) for i in range(10)]
    items = [(draw(look, seed=i, side=300), f"Entity {i}", f"http://w/{i}") for i, look in enumerate(looks)]
    index = build_image_index(items, tmp_path / "idx", max_thumbnail_side=64)
    meta = json.loads((index / "index.json").read_text())
    assert meta["items"] == 10 and meta["embedder"] == {"type": "handcrafted", "version": HandcraftedEmbedder.version}
    search = LocalImageSearch(index)
    hits = search.search(draw(looks[3], seed=777), k=3)
    assert len(hits) == 3 and all(isinstance(h, ImageHit) for h in hits)
    assert (hits[0].title, hits[0].url) == ("Entity 3", "http://w/3")
    assert max(hits[0].thumbnail.size) == 64 and hits[0].score >= hits[1].score >= hits[2].score
    assert len(search.search(items[0][0], k=99)) == 10


def test_folder_with_metadata_and_parquet_collections(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (20, 20), "red").save(folder / "red_square.png")
    Image.new("RGB", (20, 20), "blue").save(folder / "b.png")
    (folder / "metadata.jsonl").write_text(json.dumps({"file_name": "b.png", "title": "Blue", "url": "http://b"}) + "\n")
    items = list(read_image_items(folder))
    assert [(t, u) for _, t, u in items] == [("Blue", "http://b"), ("red square", (folder / "red_square.png").resolve().as_uri())]
    table = pa.table({"image": [{"bytes": encode_png(Image.new("RGB", (8, 8), "green")), "path": None}], "title": ["G"], "url": ["http://g"]})
    pq.write_table(table, tmp_path / "c.parquet")
    [(image, title, url)] = list(read_image_items(tmp_path / "c.parquet"))
    assert image.getpixel((0, 0)) == (0, 128, 0) and (title, url) == ("G", "http://g")


def test_bad_inputs_raise_data_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        list(read_image_items(tmp_path / "empty"))
    with pytest.raises(DataError, match="neither an image folder"):
        read_image_items(tmp_path / "nothing.txt")
    with pytest.raises(DataError, match="no images were given"):
        build_image_index([], tmp_path / "idx")
    with pytest.raises(DataError, match="not an image index"):
        LocalImageSearch(tmp_path)
    with pytest.raises(Exception, match="unknown image embedder"):
        embedder_from_spec({"type": "sift"})
    with pytest.raises(DataError, match="rebuild it"):
        embedder_from_spec({"type": "handcrafted", "version": 1})


def test_hnsw_index_finds_what_the_exact_index_finds(tmp_path):
    looks = [signature(i, False) for i in range(30)]
    items = [(draw(look, seed=i), f"Entity {i}", f"http://w/{i}") for i, look in enumerate(looks)]
    flat = LocalImageSearch(build_image_index(items, tmp_path / "flat", index_type="flat"))
    hnsw = LocalImageSearch(build_image_index(items, tmp_path / "hnsw", index_type="hnsw"))
    assert json.loads((tmp_path / "hnsw" / "index.json").read_text())["index_type"] == "IndexHNSWFlat"
    for i in range(0, 30, 3):
        query = draw(looks[i], seed=500 + i)
        assert [h.url for h in hnsw.search(query, 3)] == [h.url for h in flat.search(query, 3)]
