"""Local text search: building, BM25 ranking, summaries, dense and hybrid retrieval, input errors."""

import json
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmsearch_r1.errors import DataError
from mmsearch_r1.tools.base import TextHit
from mmsearch_r1.tools.local_text import (
    LocalTextSearch,
    TextEncoder,
    build_text_index,
    read_pages,
    reciprocal_rank_fusion,
)

PAGES = [
    {"url": "http://w/zorblax", "title": "Zorblax", "text": "Zorblax is a country. The capital of Zorblax is Quenta. It mines tin."},
    {"url": "http://w/quenta", "title": "Quenta", "text": "Quenta is a city with a market. Many herons live there."},
    {"url": "http://w/tin", "title": "Tin", "text": "Tin is a soft grey metal. It is mined in many places."},
    {"url": "http://w/heron", "title": "Heron", "text": "The heron is a wading bird. It eats fish."},
]


class HashingEncoder(TextEncoder):
    """A deterministic bag-of-words encoder (words hashed into 64 buckets) standing in for a neural one."""

    name = "hashing-64"

    def encode(self, texts):
        out = np.zeros((len(texts), 64), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().replace(".", " ").split():
                out[row, zlib.crc32(word.encode()) % 64] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-8)


@pytest.fixture
def index(tmp_path):
    return build_text_index(PAGES, tmp_path / "idx")


def test_bm25_ranks_the_page_that_states_the_fact(index):
    hits = LocalTextSearch(index).search("capital of Zorblax", k=2)
    assert isinstance(hits[0], TextHit)
    assert hits[0].url == "http://w/zorblax"
    assert "The capital of Zorblax is Quenta." in hits[0].summary
    assert hits[0].score > 0


def test_k_bounds_results_and_unknown_words_give_nothing(index):
    search = LocalTextSearch(index)
    assert len(search.search("tin heron quenta zorblax", k=2)) == 2
    assert len(search.search("tin", k=50)) == 2  # only pages that share a term
    assert search.search("volcano xylophone", k=5) == []
    assert search.search("", k=5) == []


def test_summary_length_is_bounded(tmp_path):
    long_page = {"url": "http://w/long", "title": "Long", "text": " ".join(f"Sentence {i} about tin." for i in range(200))}
    index = build_text_index([long_page], tmp_path / "idx")
    hit = LocalTextSearch(index, summary_chars=100).search("tin", k=1)[0]
    assert 0 < len(hit.summary) <= 100


def test_jsonl_and_parquet_corpora_give_the_same_index(tmp_path):
    jsonl = tmp_path / "pages.jsonl"
    jsonl.write_text("\n".join(json.dumps(p) for p in PAGES) + "\n")
    parquet = tmp_path / "pages.parquet"
    pq.write_table(pa.table({k: [p[k] for p in PAGES] for k in ("url", "title", "text")}), parquet)
    assert list(read_pages(jsonl)) == list(read_pages(parquet)) == list(read_pages(PAGES))
    a = LocalTextSearch(build_text_index(jsonl, tmp_path / "a")).search("heron fish", k=3)
    b = LocalTextSearch(build_text_index(parquet, tmp_path / "b")).search("heron fish", k=3)
    assert [h.url for h in a] == [h.url for h in b] and a[0].url == "http://w/heron"


def test_bad_corpora_raise_data_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        list(read_pages(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"url": "u", "title": "t"}\n')
    with pytest.raises(DataError, match="url, title and text"):
        build_text_index(bad, tmp_path / "x")
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    with pytest.raises(DataError, match="line 1"):
        build_text_index(broken, tmp_path / "y")
    with pytest.raises(DataError, match="no pages"):
        build_text_index([], tmp_path / "z")
    with pytest.raises(DataError, match="not a text index"):
        LocalTextSearch(tmp_path)


def test_reciprocal_rank_fusion_prefers_documents_high_in_both():
    fused = reciprocal_rank_fusion([[1, 2, 3], [3, 1, 4]], k=60)
    assert [doc for doc, _ in fused] == [1, 3, 2, 4]


def test_dense_and_hybrid_retrieval(tmp_path):
    encoder = HashingEncoder()
    index = build_text_index(PAGES, tmp_path / "idx", encoder=encoder)
    assert json.loads((index / "index.json").read_text())["dense_encoder"] == "hashing-64"
    dense = LocalTextSearch(index, retrieval="dense", encoder=encoder).search("wading bird eats fish", k=1)
    assert dense[0].url == "http://w/heron"
    hybrid = LocalTextSearch(index, retrieval="hybrid", encoder=encoder).search("capital of Zorblax", k=2)
    assert hybrid[0].url == "http://w/zorblax" and len(hybrid) == 2
    with pytest.raises(DataError, match="no dense index"):
        LocalTextSearch(build_text_index(PAGES, tmp_path / "plain"), retrieval="dense", encoder=encoder)
