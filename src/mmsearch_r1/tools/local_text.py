"""Local text search: BM25 (``bm25s``) over a corpus of pages, with extractive query-focused summaries.

Optional dense retrieval: a ``TextEncoder`` (a sentence-transformers model folder by default) embeds every
page into a ``faiss`` inner-product index; ``retrieval="hybrid"`` fuses the BM25 and dense rankings with
reciprocal rank fusion.

An index folder holds::

    index.json      kind, format version, page count, content fingerprint, dense encoder (or null)
    pages.parquet   url, title, text of every page, in index order
    bm25/           the bm25s index
    dense.faiss     the dense index (only when built with an encoder)

>>> import tempfile
>>> pages = [{"url": "http://a", "title": "Zorblax", "text": "Zorblax is a land. Its capital is Quenta."},
...          {"url": "http://b", "title": "Tin", "text": "Tin is a grey metal."}]
>>> index = build_text_index(pages, tempfile.mkdtemp())
>>> hit = LocalTextSearch(index).search("capital of Zorblax", k=1)[0]
>>> hit.url, hit.summary
('http://a', 'Zorblax is a land. Its capital is Quenta.')
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal

import numpy as np

from mmsearch_r1.errors import DataError
from mmsearch_r1.files import existing_file, not_text
from mmsearch_r1.tools.base import TextHit, TextSearch
from mmsearch_r1.tools.summary import extractive_summary

INDEX_FORMAT = 1
Retrieval = Literal["bm25", "dense", "hybrid"]
PAGE_FIELDS = ("url", "title", "text")


@dataclass(frozen=True)
class Page:
    """One page of a corpus."""

    url: str
    title: str
    text: str


# --- reading a corpus ----------------------------------------------------------------------------


def _page_from(row: Any, where: str) -> Page:
    if isinstance(row, Page):
        return row
    if not isinstance(row, dict) or any(key not in row for key in PAGE_FIELDS):
        raise DataError(f"{where} is not a page; each page needs the keys url, title and text.")
    return Page(str(row["url"]), str(row["title"] or ""), str(row["text"] or ""))


def _read_jsonl(path: Path) -> Iterator[Page]:
    with path.open(encoding="utf-8") as lines:
        try:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    raise DataError(f"line {number} of {path} is not valid JSON; write one page object per line.") from None
                yield _page_from(row, f"line {number} of {path}")
        except UnicodeDecodeError:
            raise not_text(path, "corpus file", "pass a JSONL or Parquet file of pages.") from None


def _read_parquet(path: Path) -> Iterator[Page]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several unrelated types for a bad file
        raise DataError(f"{path} is not a readable Parquet file ({error}).") from None
    missing = [name for name in PAGE_FIELDS if name not in table.column_names]
    if missing:
        raise DataError(f"{path} lacks the column(s) {', '.join(missing)}; a page corpus needs url, title and text.")
    for row in table.select(list(PAGE_FIELDS)).to_pylist():
        yield _page_from(row, f"a row of {path}")


def read_pages(source: str | Path | Iterable[Any]) -> Iterator[Page]:
    """Pages from a JSONL file, a Parquet file, or an iterable of ``Page`` / dicts with url, title, text."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        existing_file(path, "corpus file", "pass a JSONL or Parquet file of pages.")
        if path.suffix == ".parquet":
            return _read_parquet(path)
        return _read_jsonl(path)
    return (_page_from(row, f"corpus item {i}") for i, row in enumerate(source))


# --- dense encoders ------------------------------------------------------------------------------


class TextEncoder(ABC):
    """Embeds texts into L2-normalised vectors for dense retrieval."""

    name: str = "encoder"

    @abstractmethod
    def encode(self, texts: list[str]) -> np.ndarray:
        """Return a float32 array of shape (len(texts), dim), each row of unit length."""


class SentenceTransformerEncoder(TextEncoder):
    """A sentence-transformers model loaded from a local folder (no download happens)."""

    def __init__(self, model_dir: str | Path, batch_size: int = 64):
        from sentence_transformers import SentenceTransformer  # slow import (seconds): only when asked for

        if not Path(model_dir).is_dir():
            raise DataError(f"dense model folder {model_dir} does not exist; pass a sentence-transformers model folder.")
        self.name = str(Path(model_dir).resolve())
        self.model = SentenceTransformer(str(model_dir), device="cpu")
        self.batch_size = batch_size

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True)
        return np.asarray(vectors, dtype=np.float32)


def reciprocal_rank_fusion(rankings: list[list[int]], k: int = 60) -> list[tuple[int, float]]:
    """Fuse ranked lists of document ids: score(d) = sum over lists of 1 / (k + rank), rank from 1.

    >>> reciprocal_rank_fusion([[3, 1], [1, 2]], k=1)
    [(1, 0.8333333333333333), (3, 0.5), (2, 0.3333333333333333)]
    """
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, doc in enumerate(ranking, 1):
            fused[doc] = fused.get(doc, 0.0) + 1.0 / (k + rank)
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


# --- building ------------------------------------------------------------------------------------


def _write_pages(pages: list[Page], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {name: [getattr(p, name) for p in pages] for name in PAGE_FIELDS}
    pq.write_table(pa.table(columns), path)


def build_text_index(
    pages: str | Path | Iterable[Any],
    out_dir: str | Path,
    *,
    encoder: TextEncoder | None = None,
    dense_model: str | Path | None = None,
    show_progress: bool = False,
) -> Path:
    """Index ``pages`` (JSONL/Parquet path or iterable of dicts with url, title, text) into ``out_dir``.

    Pass ``dense_model`` (a sentence-transformers folder) or an ``encoder`` to add a dense index.
    Returns the index folder.
    """
    import bm25s

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus = list(read_pages(pages))
    if not corpus:
        raise DataError(f"the corpus for {out} holds no pages; give at least one page with url, title and text.")
    _write_pages(corpus, out / "pages.parquet")
    fingerprint = hashlib.sha256()
    for page in corpus:
        fingerprint.update("\0".join((page.url, page.title, page.text, "")).encode())
    documents = [f"{p.title}\n{p.text}" for p in corpus]
    tokens = bm25s.tokenize(documents, stopwords="en", show_progress=show_progress)
    retriever = bm25s.BM25()
    retriever.index(tokens, show_progress=show_progress)
    retriever.save(str(out / "bm25"), show_progress=False)
    if dense_model is not None and encoder is None:
        encoder = SentenceTransformerEncoder(dense_model)
    if encoder is not None:
        _write_dense(encoder, documents, out / "dense.faiss")
    meta = {
        "kind": "text",
        "format": INDEX_FORMAT,
        "pages": len(corpus),
        "fingerprint": fingerprint.hexdigest(),
        "dense_encoder": encoder.name if encoder else None,
    }
    (out / "index.json").write_text(json.dumps(meta, indent=2))
    return out


def _write_dense(encoder: TextEncoder, documents: list[str], path: Path, batch: int = 1024) -> None:
    import faiss

    index = None
    for start in range(0, len(documents), batch):
        vectors = encoder.encode(documents[start : start + batch])
        index = index or faiss.IndexFlatIP(vectors.shape[1])
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    faiss.write_index(index, str(path))


# --- searching -----------------------------------------------------------------------------------


def read_index_meta(index_dir: str | Path, kind: str) -> dict:
    """The ``index.json`` of an index folder, checked to be of ``kind`` (text or image)."""
    path = Path(index_dir) / "index.json"
    article = "an" if kind[0] in "aeiou" else "a"
    if not path.is_file():
        raise DataError(f"{index_dir} is not {article} {kind} index (no index.json); build one with `mmsearch-r1 index {kind}`.")
    meta = json.loads(path.read_text())
    if meta.get("kind") != kind:
        other = str(meta.get("kind"))
        raise DataError(f"{index_dir} holds {'an' if other[0] in 'aeiou' else 'a'} {other} index, not {article} {kind} index; point to the {kind} index folder.")
    return meta


class LocalTextSearch(TextSearch):
    """BM25 (optionally dense or hybrid) search over an index folder built by ``build_text_index``."""

    name = "local_text"

    def __init__(
        self,
        index_dir: str | Path,
        *,
        retrieval: Retrieval = "bm25",
        summary_chars: int = 300,
        encoder: TextEncoder | None = None,
    ):
        import bm25s
        import pyarrow.parquet as pq

        self.index_dir = Path(index_dir)
        meta = read_index_meta(self.index_dir, "text")
        self.retrieval = retrieval
        self.summary_chars = summary_chars
        self.fingerprint = meta.get("fingerprint", "")
        self._bm25 = bm25s.BM25.load(str(self.index_dir / "bm25"), show_progress=False)
        self._pages = pq.read_table(self.index_dir / "pages.parquet")
        self._dense = None
        self._encoder = encoder
        if retrieval != "bm25":
            self._load_dense(meta)

    def _load_dense(self, meta: dict) -> None:
        import faiss

        path = self.index_dir / "dense.faiss"
        if not path.is_file() or not meta.get("dense_encoder"):
            raise DataError(f"{self.index_dir} has no dense index; rebuild it with a dense model (`mmsearch-r1 index text --dense-model DIR`) or search with BM25 (`--retrieval bm25`, tools.text.retrieval=bm25).")
        if self._encoder is None:
            self._encoder = SentenceTransformerEncoder(meta["dense_encoder"])
        self._dense = faiss.read_index(str(path))

    def __len__(self) -> int:
        return self._pages.num_rows

    @property
    def cache_id(self) -> str:
        return f"{self.name}:{self.fingerprint[:16]}:{self.retrieval}:{self.summary_chars}"

    def bm25_ranking(self, query: str, k: int) -> list[tuple[int, float]]:
        """(page index, BM25 score) of the best ``k`` pages that share a term with ``query``."""
        import bm25s

        words = bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)[0]
        known = [w for w in words if w in self._bm25.vocab_dict]
        if not known:
            return []
        scores = self._bm25.get_scores(known)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.lexsort((top, -scores[top]))]
        return [(int(i), float(scores[i])) for i in top if scores[i] > 0]

    def dense_ranking(self, query: str, k: int) -> list[tuple[int, float]]:
        """(page index, cosine similarity) of the best ``k`` pages under the dense encoder."""
        vector = self._encoder.encode([query])
        scores, ids = self._dense.search(np.ascontiguousarray(vector, dtype=np.float32), min(k, len(self)))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def ranking(self, query: str, k: int) -> list[tuple[int, float]]:
        """The page ranking for ``query`` under this search's retrieval mode."""
        if self.retrieval == "bm25":
            return self.bm25_ranking(query, k)
        if self.retrieval == "dense":
            return self.dense_ranking(query, k)
        depth = max(4 * k, 50)
        lists = [[i for i, _ in self.bm25_ranking(query, depth)], [i for i, _ in self.dense_ranking(query, depth)]]
        return reciprocal_rank_fusion(lists)[:k]

    def page(self, i: int) -> Page:
        """The ``i``-th page of the index."""
        return Page(*(self._pages.column(name)[i].as_py() for name in PAGE_FIELDS))

    def search(self, query: str, k: int = 5) -> list[TextHit]:
        hits = []
        for i, score in self.ranking(query, k):
            page = self.page(i)
            summary = extractive_summary(page.text, query, self.summary_chars)
            hits.append(TextHit(title=page.title, url=page.url, summary=summary, score=score))
        return hits
