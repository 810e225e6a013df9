"""Parquet I/O in the veRL / FVQA layout.

One row per sample:

- ``prompt``: list of ``{role, content}``; the question is the last user message (an ``<image>`` marker is dropped);
- ``images``: list of ``{bytes, path}``; the first is the question image (``path`` is read relative to the file
  when ``bytes`` is empty);
- ``reward_model``: ``{ground_truth, candidate_answers, style}``, ``candidate_answers`` a JSON list as a string;
- ``data_source``; optional ``image_urls``, ``extra_info`` (``id``, ``search_need``, ``index``) and ``category``
  (``search_free`` / ``search_required``).

A bad row raises one ``DataError`` naming the row and the field, unless ``skip_bad`` is set: then bad rows are
skipped and counted (``scan_parquet`` returns them with the reason).
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from mmsearch_r1.data.schema import CATEGORIES, SEARCH_NEEDS, VQASample
from mmsearch_r1.errors import DataError
from mmsearch_r1.files import existing_file

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 25_000_000
REQUIRED_COLUMNS = ("prompt", "images", "reward_model")


@dataclass
class ParquetScan:
    """What a file holds: the good samples, and (row index, reason) for each bad row."""

    samples: list[VQASample] = field(default_factory=list)
    bad_rows: list[tuple[int, str]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)


class _BadRow(Exception):
    def __init__(self, field_name: str, reason: str):
        super().__init__(f"field `{field_name}` {reason}")


def _question(prompt: Any) -> str:
    if not isinstance(prompt, list) or not prompt:
        raise _BadRow("prompt", "must be a non-empty list of {role, content} messages")
    users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str)]
    if not users:
        raise _BadRow("prompt", "has no user message with text content")
    question = " ".join(users[-1]["content"].replace("<image>", " ").split())
    if not question:
        raise _BadRow("prompt", "has an empty question")
    return question


def _image_bytes(images: Any, base_dir: Path, max_pixels: int) -> bytes:
    from PIL import Image

    if not isinstance(images, list) or not images or not isinstance(images[0], dict):
        raise _BadRow("images", "must be a non-empty list of {bytes, path}")
    payload, path = images[0].get("bytes"), images[0].get("path")
    if not payload and path:
        file = Path(path) if Path(path).is_absolute() else base_dir / path
        if not file.is_file():
            raise _BadRow("images", f"points to {file}, which does not exist")
        payload = file.read_bytes()
    if not payload:
        raise _BadRow("images", "holds neither image bytes nor a path")
    try:
        with Image.open(io.BytesIO(payload)) as img:
            if img.width * img.height > max_pixels:
                raise _BadRow("images", f"is {img.width}x{img.height}, over the {max_pixels}-pixel limit")
            img.load()
    except _BadRow:
        raise
    except Exception as error:  # PIL raises many types for undecodable data
        raise _BadRow("images", f"cannot be decoded as an image ({type(error).__name__})") from None
    return payload


def _answers(reward_model: Any) -> list[str]:
    if not isinstance(reward_model, dict):
        raise _BadRow("reward_model", "must be a struct with ground_truth and candidate_answers")
    truth = reward_model.get("ground_truth")
    if isinstance(truth, list):  # some veRL files store a list of golds
        truth = truth[0] if truth else None
    if not isinstance(truth, str) or not truth.strip():
        raise _BadRow("reward_model.ground_truth", "must be a non-empty string")
    raw = reward_model.get("candidate_answers")
    candidates: list = []
    if raw not in (None, ""):
        try:
            candidates = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError:
            raise _BadRow("reward_model.candidate_answers", "is not valid JSON") from None
        if not isinstance(candidates, list) or not all(isinstance(c, str) for c in candidates):
            raise _BadRow("reward_model.candidate_answers", "must be a JSON list of strings")
    return list(dict.fromkeys([truth.strip()] + [c.strip() for c in candidates if c.strip()]))


def _row_to_sample(row: dict, index: int, base_dir: Path, max_pixels: int) -> VQASample:
    extra = row.get("extra_info") or {}
    if not isinstance(extra, dict):
        raise _BadRow("extra_info", "must be a struct")
    category = row.get("category")
    if category is not None and category not in CATEGORIES:
        raise _BadRow("category", f"must be one of {', '.join(CATEGORIES)}, not {category!r}")
    need = extra.get("search_need")
    if need is not None and need not in SEARCH_NEEDS:
        raise _BadRow("extra_info.search_need", f"must be one of {', '.join(SEARCH_NEEDS)}, not {need!r}")
    urls = row.get("image_urls")
    data_source = row.get("data_source") or "unknown"
    rest = {k: v for k, v in extra.items() if k not in ("id", "search_need", "index", "extra") and v is not None}
    if extra.get("extra"):
        rest.update(json.loads(extra["extra"]))
    return VQASample(
        id=str(extra.get("id") or f"{data_source}-{index}"),
        question=_question(row.get("prompt")),
        image_bytes=_image_bytes(row.get("images"), base_dir, max_pixels),
        answers=_answers(row.get("reward_model")),
        data_source=data_source,
        category=category,
        search_need=need,
        image_url=(urls[0] if isinstance(urls, list) and urls else urls if isinstance(urls, str) else None),
        extra=rest,
    )


def scan_parquet(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> ParquetScan:
    """Read every row, keeping good samples and recording each bad row with its reason."""
    import pyarrow.parquet as pq

    path = existing_file(path, "data file", "pass the path of a veRL/FVQA Parquet file (a world's train.parquet, for instance).")
    try:
        table = pq.read_table(path)
    except Exception as error:
        raise DataError(f"{path} is not a readable Parquet file ({type(error).__name__}); check the file.") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"{path} has no column `{missing[0]}`; a veRL/FVQA file needs {', '.join(REQUIRED_COLUMNS)}.")
    scan = ParquetScan(columns=table.column_names)
    for index, row in enumerate(table.to_pylist()):
        try:
            scan.samples.append(_row_to_sample(row, index, path.parent, max_pixels))
        except _BadRow as bad:
            scan.bad_rows.append((index, str(bad)))
    return scan


def read_parquet(path: str | Path, *, skip_bad: bool = False, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[VQASample]:
    """Read a veRL/FVQA Parquet file into samples.

    A bad row raises ``DataError`` naming the row and the field; with ``skip_bad`` it is skipped, and the number
    skipped is logged as a warning.
    """
    scan = scan_parquet(path, max_pixels=max_pixels)
    if scan.bad_rows and not skip_bad:
        index, reason = scan.bad_rows[0]
        raise DataError(f"{path}, row {index}: {reason}; fix the row or read with skip_bad=True (--skip-bad).")
    if scan.bad_rows:
        log.warning("%s: skipped %d bad rows of %d", path, len(scan.bad_rows), len(scan.bad_rows) + len(scan.samples))
    return scan.samples


def _schema():
    import pyarrow as pa

    return pa.schema([
        ("prompt", pa.list_(pa.struct([("content", pa.string()), ("role", pa.string())]))),
        ("images", pa.list_(pa.struct([("bytes", pa.binary()), ("path", pa.string())]))),
        ("reward_model", pa.struct([("candidate_answers", pa.string()), ("ground_truth", pa.string()), ("style", pa.string())])),
        ("data_source", pa.string()),
        ("image_urls", pa.list_(pa.string())),
        ("extra_info", pa.struct([("id", pa.string()), ("index", pa.int64()), ("search_need", pa.string()), ("extra", pa.string())])),
        ("category", pa.string()),
    ])


def sample_to_row(sample: VQASample, index: int) -> dict:
    """The veRL/FVQA row of a sample (the question as the user message, answers as ground truth + JSON aliases)."""
    return {
        "prompt": [{"content": sample.question, "role": "user"}],
        "images": [{"bytes": sample.image_bytes, "path": None}],
        "reward_model": {"candidate_answers": json.dumps(sample.answers), "ground_truth": sample.answers[0], "style": "rule"},
        "data_source": sample.data_source,
        "image_urls": [sample.image_url] if sample.image_url else None,
        "extra_info": {"id": sample.id, "index": index, "search_need": sample.search_need,
                       "extra": json.dumps(sample.extra, sort_keys=True) if sample.extra else None},
        "category": sample.category,
    }


def write_parquet(samples: Iterable[VQASample], path: str | Path) -> Path:
    """Write samples as a veRL/FVQA Parquet file; the output is byte-identical for identical input."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [sample_to_row(s, i) for i, s in enumerate(samples)]
    table = pa.Table.from_pylist(rows, schema=_schema())
    pq.write_table(table, path, compression="zstd")
    return path
