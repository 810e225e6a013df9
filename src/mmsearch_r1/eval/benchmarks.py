"""Benchmark loaders: local files of FVQA, InfoSeek, MMSearch, SimpleVQA and LiveVQA as ``VQASample`` lists.

Each loader reads the benchmark's published field names (``docs/evaluation.md`` lists each layout and the
mapping). A file that does not match raises one ``DataError`` naming the file, the record and the missing field.

- ``fvqa``: any veRL/FVQA Parquet file (``prompt``, ``images``, ``reward_model``, ...), read by
  ``mmsearch_r1.data.read_parquet``. The demo world's splits use this layout too.
- ``infoseek``: JSONL, one record per line: ``data_id``, ``image_id``, ``question``, ``answer`` (list),
  optional ``answer_eval`` (list of strings or numeric ``{"range": [lo, hi]}`` items) and ``data_split``; the image
  is ``<image_root>/<image_id>.<jpg|jpeg|JPEG|png>`` (found anywhere below ``image_root``).
- ``mmsearch``: the ``end2end`` Parquet file (or JSON/JSONL with the same fields): ``sample_id``, ``query``,
  ``query_image``, ``gt_answer``, optional ``alternative_gt_answers``, ``area``, ``subfield``, ``timestamp``,
  ``gt_requery``. Rows without a query image (MMSearch's text-only questions) are skipped and counted.
- ``simplevqa``: Parquet, JSON or JSONL: ``data_id``, ``image`` (image bytes, a base64 string, or a path),
  ``question``, ``answer``, optional ``image_description``, ``language``, ``original_category``, ``source``,
  ``atomic_question``, ``atomic_fact``, ``vqa_category``.
- ``livevqa``: ``benchmark.json``, a list of ``{id, img_path, level1_qa, level2_qa, source, time}`` where each
  ``levelN_qa`` holds ``question``, ``question_type``, ``options``, ``Ground_Truth`` (an option letter) and
  ``Ground_Truth_List`` (the free-form answers, used here); each level becomes one sample ``<id>/level<N>``.
  Images are looked up in ``image_root``, the file's folder and its ``*_imgs`` / ``*_images`` subfolders.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from pathlib import Path
from typing import Any, Callable, Iterable

from mmsearch_r1.data.schema import VQASample
from mmsearch_r1.errors import DataError
from mmsearch_r1.files import existing_file, read_text

BENCHMARK_FIX = "pass a benchmark file (JSONL, JSON or Parquet; a world's test.parquet, for instance)."

log = logging.getLogger(__name__)

BENCHMARKS = ("fvqa", "infoseek", "mmsearch", "simplevqa", "livevqa")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".JPEG", ".JPG", ".png", ".PNG", ".webp")

REQUIRED = {
    "infoseek": ("data_id", "image_id", "question", "answer"),
    "mmsearch": ("sample_id", "query", "query_image", "gt_answer"),
    "simplevqa": ("data_id", "image", "question", "answer"),
    "livevqa": ("id", "level1_qa"),
}


# --- reading records -----------------------------------------------------------------------------


def read_records(path: Path) -> list[dict]:
    """The records of a JSONL, JSON (a list, or an object holding one list) or Parquet file."""
    existing_file(path, "data file", BENCHMARK_FIX)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(path).to_pylist()
        except Exception as error:
            raise DataError(f"{path} is not a readable Parquet file ({type(error).__name__}); check the file.") from None
    text = read_text(path, "data file", BENCHMARK_FIX)
    if suffix == ".jsonl":
        return [_json_line(line, path, i) for i, line in enumerate(text.splitlines()) if line.strip()]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{path} is not valid JSON ({error.msg} at line {error.lineno}); fix the file.") from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else [data]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(f"{path} holds no list of records; a benchmark file is a list of JSON objects.")
    return data


def _json_line(line: str, path: Path, index: int) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}, line {index + 1}: not valid JSON ({error.msg}); fix the line.") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}, line {index + 1}: not a JSON object; each line must be one record.")
    return record


def _require(records: list[dict], fmt: str, path: Path) -> None:
    for i, record in enumerate(records):
        for name in REQUIRED[fmt]:
            if record.get(name) is None and not (fmt == "mmsearch" and name == "query_image" and name in record):
                raise DataError(
                    f"{path}, record {i}: no field `{name}`; a {fmt} file needs {', '.join(REQUIRED[fmt])} "
                    f"(see docs/evaluation.md)."
                )


def detect_format(path: str | Path) -> str:
    """Which benchmark layout a file has, from its columns or its first record's keys."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        try:
            names = set(pq.read_schema(path).names)
        except Exception as error:
            raise DataError(f"{path} is not a readable Parquet file ({type(error).__name__}); check the file.") from None
    else:
        records = read_records(path)
        names = set(records[0]) if records else set()
    if {"prompt", "reward_model"} <= names:
        return "fvqa"
    if "level1_qa" in names:
        return "livevqa"
    if {"sample_id", "gt_answer"} <= names:
        return "mmsearch"
    if "image_id" in names and "data_id" in names:
        return "infoseek"
    if {"data_id", "image"} <= names or "atomic_question" in names:
        return "simplevqa"
    raise DataError(
        f"cannot tell which benchmark {path} holds (fields: {', '.join(sorted(names)) or 'none'}); "
        f"pass --format with one of {', '.join(BENCHMARKS)}."
    )


# --- images --------------------------------------------------------------------------------------


class ImageFinder:
    """Finds image files by name or stem below a few folders (indexed once, on first use)."""

    def __init__(self, roots: Iterable[Path]):
        self.roots = [r for r in dict.fromkeys(Path(r) for r in roots) if r.is_dir()]
        self._by_name: dict[str, Path] | None = None

    def _index(self) -> dict[str, Path]:
        if self._by_name is None:
            self._by_name = {}
            for root in self.roots:
                for file in sorted(root.rglob("*")):
                    if file.suffix in IMAGE_SUFFIXES and file.is_file():
                        self._by_name.setdefault(file.name, file)
                        self._by_name.setdefault(file.stem, file)
        return self._by_name

    def find(self, name: str) -> Path | None:
        for root in self.roots:
            for candidate in [root / name] + [root / f"{name}{s}" for s in IMAGE_SUFFIXES]:
                if candidate.is_file():
                    return candidate
        return self._index().get(Path(name).name) or self._index().get(Path(name).stem)


def image_payload(value: Any, finder: ImageFinder) -> bytes | None:
    """Encoded image bytes from raw bytes, an ``{bytes, path}`` struct, a base64 string or a file name."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value) or None
    if isinstance(value, dict):
        return image_payload(value.get("bytes"), finder) or image_payload(value.get("path"), finder)
    if isinstance(value, str) and value:
        if value.startswith("data:image") and "," in value:
            value = value.split(",", 1)[1]
        elif len(value) < 1024:
            found = finder.find(value)
            if found is not None:
                return found.read_bytes()
            if Path(value).suffix in IMAGE_SUFFIXES:
                return None
        try:
            return base64.b64decode(value, validate=True) or None
        except (binascii.Error, ValueError):
            return None
    return None


def _decodes(payload: bytes) -> bool:
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(payload)) as img:
            img.verify()
        return True
    except Exception:  # PIL raises many types for undecodable data
        return False


def _image_or_fail(value: Any, finder: ImageFinder, path: Path, index: int, field: str) -> bytes:
    payload = image_payload(value, finder)
    if payload is not None and not _decodes(payload):
        raise DataError(f"{path}, record {index}: field `{field}` holds data that is not a decodable image; fix the record.")
    if payload is None:
        where = ", ".join(str(r) for r in finder.roots) or "no existing folder"
        raise DataError(
            f"{path}, record {index}: field `{field}` ({str(value)[:60]!r}) is not image data and no such file is in {where}; "
            f"pass --image-root with the benchmark's image folder."
        )
    return payload


# --- answers -------------------------------------------------------------------------------------


def _strings(value: Any) -> list[str]:
    """Answer strings from a string, a JSON-list string, or a list (non-string items are skipped)."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                return [text]
            return _strings(parsed)
        return [text] if text else []
    if isinstance(value, (list, tuple)):
        return [s for item in value for s in (_strings(item) if isinstance(item, str) else [])]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [str(value)]
    return []


def _answers(*groups: Any) -> list[str]:
    return list(dict.fromkeys(a for g in groups for a in _strings(g) if a))


# --- one loader per benchmark --------------------------------------------------------------------


def _infoseek(records: list[dict], path: Path, finder: ImageFinder) -> list[VQASample]:
    _require(records, "infoseek", path)
    samples = []
    for i, r in enumerate(records):
        ranges = [item for item in (r.get("answer_eval") or []) if isinstance(item, dict)]
        samples.append(VQASample(
            id=str(r["data_id"]), question=str(r["question"]),
            image_bytes=_image_or_fail(r.get("image") or r["image_id"], finder, path, i, "image_id"),
            answers=_required_answers(_answers(r["answer"], r.get("answer_eval")), path, i, "answer"),
            data_source="infoseek",
            extra={k: v for k, v in {"image_id": r["image_id"], "data_split": r.get("data_split"), "answer_ranges": ranges or None}.items() if v},
        ))
    return samples


def _mmsearch(records: list[dict], path: Path, finder: ImageFinder) -> list[VQASample]:
    _require(records, "mmsearch", path)
    samples, skipped = [], 0
    for i, r in enumerate(records):
        if not r.get("query_image"):
            skipped += 1
            continue
        samples.append(VQASample(
            id=str(r["sample_id"]), question=str(r["query"]),
            image_bytes=_image_or_fail(r["query_image"], finder, path, i, "query_image"),
            answers=_required_answers(_answers(r["gt_answer"], r.get("alternative_gt_answers")), path, i, "gt_answer"),
            data_source="mmsearch",
            extra={k: r[k] for k in ("area", "subfield", "timestamp", "gt_requery") if r.get(k) is not None},
        ))
    if skipped:
        log.warning("%s: skipped %d MMSearch questions without a query image", path, skipped)
    return samples


def _simplevqa(records: list[dict], path: Path, finder: ImageFinder) -> list[VQASample]:
    _require(records, "simplevqa", path)
    keep = ("image_description", "language", "original_category", "source", "atomic_question", "atomic_fact", "vqa_category")
    return [
        VQASample(
            id=str(r["data_id"]), question=str(r["question"]),
            image_bytes=_image_or_fail(r["image"], finder, path, i, "image"),
            answers=_required_answers(_answers(r["answer"]), path, i, "answer"),
            data_source="simplevqa",
            extra={k: r[k] for k in keep if r.get(k) is not None},
        )
        for i, r in enumerate(records)
    ]


def _livevqa(records: list[dict], path: Path, finder: ImageFinder) -> list[VQASample]:
    _require(records, "livevqa", path)
    samples = []
    for i, r in enumerate(records):
        for level in ("level1_qa", "level2_qa"):
            qa = r.get(level)
            if not qa:
                continue
            for name in ("question", "Ground_Truth_List"):
                if qa.get(name) is None:
                    raise DataError(f"{path}, record {i}: `{level}` has no field `{name}`; see docs/evaluation.md for the LiveVQA layout.")
            image_name = qa.get("img_path") or r.get("img_path")
            if not image_name:
                raise DataError(f"{path}, record {i}: no field `img_path`; a LiveVQA record names its image file.")
            samples.append(VQASample(
                id=f"{r['id']}/{level.split('_')[0]}", question=str(qa["question"]),
                image_bytes=_image_or_fail(image_name, finder, path, i, "img_path"),
                answers=_required_answers(_answers(qa["Ground_Truth_List"]), path, i, f"{level}.Ground_Truth_List"),
                data_source="livevqa",
                image_url=qa.get("img_url"),
                extra={k: v for k, v in {"level": level.split("_")[0], "question_type": qa.get("question_type"),
                                          "source": r.get("source"), "time": r.get("time")}.items() if v},
            ))
    return samples


def _required_answers(answers: list[str], path: Path, index: int, field: str) -> list[str]:
    if not answers:
        raise DataError(f"{path}, record {index}: field `{field}` holds no answer text; fix the record.")
    return answers


_LOADERS: dict[str, Callable[[list[dict], Path, ImageFinder], list[VQASample]]] = {
    "infoseek": _infoseek,
    "mmsearch": _mmsearch,
    "simplevqa": _simplevqa,
    "livevqa": _livevqa,
}


def _image_roots(path: Path, image_root: Path | None) -> list[Path]:
    roots = [image_root] if image_root is not None else []
    roots.append(path.parent)
    roots += sorted(p for p in path.parent.iterdir() if p.is_dir() and p.name.lower().endswith(("_imgs", "_images", "images")))
    return roots


def load_benchmark(path: str | Path, fmt: str = "auto", *, image_root: str | Path | None = None, limit: int | None = None) -> list[VQASample]:
    """Read a benchmark file into samples; ``fmt`` is one of ``BENCHMARKS`` or ``auto`` (detected from the fields)."""
    path = existing_file(path, "data file", BENCHMARK_FIX)
    if image_root is not None and not Path(image_root).is_dir():
        raise DataError(f"image folder {image_root} does not exist; pass the folder holding the benchmark's images.")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "fvqa":
        from mmsearch_r1.data import read_parquet

        if path.suffix.lower() != ".parquet":
            raise DataError(f"{path}: the fvqa layout is a veRL Parquet file; pass a .parquet file or another --format.")
        samples = read_parquet(path)
    elif fmt in _LOADERS:
        records = read_records(path)
        if not records:
            raise DataError(f"{path} holds no records; pass a non-empty benchmark file.")
        samples = _LOADERS[fmt](records, path, ImageFinder(_image_roots(path, Path(image_root) if image_root else None)))
    else:
        raise DataError(f"unknown benchmark format {fmt!r}; use one of auto, {', '.join(BENCHMARKS)}.")
    return samples[:limit] if limit is not None else samples
