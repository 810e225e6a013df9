"""Benchmark loaders on small files written here in each benchmark's published layout."""

import base64
import io
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmsearch_r1.data.schema import VQASample
from mmsearch_r1.errors import DataError
from mmsearch_r1.eval.benchmarks import detect_format, load_benchmark

OFFICIAL = Path("/work/shared/fixtures/official_mini_data.parquet")


def _png(color=(200, 30, 30), size=(12, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def _jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


# --- InfoSeek --------------------------------------------------------------------------------------


def _infoseek(tmp_path):
    images = tmp_path / "oven_images" / "01"
    images.mkdir(parents=True)
    (images / "oven_0001.jpg").write_bytes(_png())
    (images / "oven_0002.png").write_bytes(_png((0, 0, 255)))
    return _jsonl(tmp_path / "infoseek_val.jsonl", [
        {"data_id": "val_0", "image_id": "oven_0001", "question": "Which river is this?", "answer": ["Danube"],
         "answer_eval": ["Danube", "Donau"], "data_split": "val_unseen_entity"},
        {"data_id": "val_1", "image_id": "oven_0002", "question": "How tall is it?", "answer": ["300"],
         "answer_eval": [{"wikidata": 300.0, "range": [290.0, 310.0]}], "data_split": "val_unseen_question"},
    ])


def test_infoseek_loads_answers_aliases_and_images_found_below_the_root(tmp_path):
    path = _infoseek(tmp_path)
    assert detect_format(path) == "infoseek"
    samples = load_benchmark(path, image_root=tmp_path / "oven_images")
    assert [s.id for s in samples] == ["val_0", "val_1"]
    assert samples[0].answers == ["Danube", "Donau"] and samples[0].data_source == "infoseek"
    assert samples[0].image.getpixel((0, 0)) == (200, 30, 30)
    assert samples[1].image.getpixel((0, 0)) == (0, 0, 255)
    assert samples[1].answers == ["300"] and samples[1].extra["answer_ranges"][0]["range"] == [290.0, 310.0]
    assert samples[0].extra["data_split"] == "val_unseen_entity"


def test_infoseek_missing_field_and_missing_image_name_the_problem(tmp_path):
    path = _jsonl(tmp_path / "bad.jsonl", [{"data_id": "v", "image_id": "x", "answer": ["a"]}])
    with pytest.raises(DataError, match="record 0: no field `question`"):
        load_benchmark(path, "infoseek")
    path = _jsonl(tmp_path / "bad2.jsonl", [{"data_id": "v", "image_id": "nowhere", "question": "q", "answer": ["a"]}])
    with pytest.raises(DataError, match="field `image_id`.*--image-root"):
        load_benchmark(path, "infoseek")


# --- MMSearch --------------------------------------------------------------------------------------


def test_mmsearch_parquet_with_image_structs_skips_text_only_rows(tmp_path):
    rows = [
        {"sample_id": "news_1", "query": "Who won the match shown?", "query_image": {"bytes": _png(), "path": None},
         "gt_answer": "Rangers", "alternative_gt_answers": ["Rangers FC"], "area": "news", "subfield": "sports",
         "timestamp": "2024-08", "gt_requery": "match result"},
        {"sample_id": "news_2", "query": "Text only?", "query_image": None, "gt_answer": "x",
         "alternative_gt_answers": [], "area": "news", "subfield": "sports", "timestamp": "2024-08", "gt_requery": "q"},
    ]
    path = tmp_path / "end2end.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    assert detect_format(path) == "mmsearch"
    samples = load_benchmark(path)
    assert len(samples) == 1
    s = samples[0]
    assert (s.id, s.question, s.answers, s.data_source) == ("news_1", "Who won the match shown?", ["Rangers", "Rangers FC"], "mmsearch")
    assert s.extra["subfield"] == "sports" and s.extra["gt_requery"] == "match result"
    assert s.image.size == (12, 10)


def test_mmsearch_missing_gt_answer_is_named(tmp_path):
    path = _jsonl(tmp_path / "m.jsonl", [{"sample_id": "1", "query": "q", "query_image": base64.b64encode(_png()).decode()}])
    with pytest.raises(DataError, match="no field `gt_answer`"):
        load_benchmark(path, "mmsearch")


# --- SimpleVQA -------------------------------------------------------------------------------------


def test_simplevqa_json_with_base64_images(tmp_path):
    records = [{"data_id": 7, "image": base64.b64encode(_png((10, 200, 10))).decode(), "image_description": "a bridge",
                "language": "EN", "question": "Which bridge is this?", "answer": "Golden Gate Bridge",
                "original_category": "landmark", "source": "web", "atomic_question": "q", "atomic_fact": "f", "vqa_category": "c"}]
    path = tmp_path / "simplevqa.json"
    path.write_text(json.dumps(records))
    assert detect_format(path) == "simplevqa"
    (s,) = load_benchmark(path)
    assert (s.id, s.answers, s.data_source, s.extra["language"]) == ("7", ["Golden Gate Bridge"], "simplevqa", "EN")
    assert s.image.getpixel((1, 1)) == (10, 200, 10)


def test_simplevqa_image_that_is_not_an_image_is_refused(tmp_path):
    path = tmp_path / "s.jsonl"
    _jsonl(path, [{"data_id": 1, "image": base64.b64encode(b"not an image at all").decode(), "question": "q", "answer": "a"}])
    with pytest.raises(DataError, match="`image`.*not a decodable image"):
        load_benchmark(path, "simplevqa")


# --- LiveVQA ---------------------------------------------------------------------------------------


def _livevqa(tmp_path):
    (tmp_path / "News_imgs").mkdir()
    (tmp_path / "News_imgs" / "bbc_1.jpg").write_bytes(_png())
    qa = {"question_type": "event", "options": ["A. x", "B. y"], "Ground_Truth": "B", "img_path": "bbc_1.jpg", "img_url": "https://example.org/1.jpg"}
    record = {"id": "0_1", "img_path": "bbc_1.jpg", "source": "BBC", "time": "2025-04-29",
              "level1_qa": {**qa, "question": "What event is this?", "Ground_Truth_List": ["Europa League match", "Europa match"]},
              "level2_qa": {**qa, "question": "How many games remain?", "Ground_Truth_List": ["5"]}}
    path = tmp_path / "benchmark.json"
    path.write_text(json.dumps([record]))
    return path


def test_livevqa_makes_one_sample_per_level_with_images_from_the_imgs_folder(tmp_path):
    path = _livevqa(tmp_path)
    assert detect_format(path) == "livevqa"
    samples = load_benchmark(path)
    assert [s.id for s in samples] == ["0_1/level1", "0_1/level2"]
    assert samples[0].answers == ["Europa League match", "Europa match"] and samples[1].answers == ["5"]
    assert samples[0].image_url == "https://example.org/1.jpg" and samples[1].extra["level"] == "level2"
    assert samples[0].image.size == (12, 10)


def test_livevqa_missing_ground_truth_list_is_named(tmp_path):
    path = tmp_path / "benchmark.json"
    path.write_text(json.dumps([{"id": "1", "img_path": "a.jpg", "level1_qa": {"question": "q"}}]))
    with pytest.raises(DataError, match="`level1_qa` has no field `Ground_Truth_List`"):
        load_benchmark(path, "livevqa")


# --- FVQA and general ------------------------------------------------------------------------------


def test_fvqa_reads_the_official_parquet(tmp_path):
    if not OFFICIAL.is_file():
        pytest.skip(f"fixture {OFFICIAL} is not on this machine")
    path = tmp_path / "fvqa_test.parquet"
    shutil.copy(OFFICIAL, path)
    assert detect_format(path) == "fvqa"
    samples = load_benchmark(path, limit=3)
    assert len(samples) == 3 and all(isinstance(s, VQASample) for s in samples)
    assert samples[0].question == "What is the country of origin of this food?" and samples[0].answers[0] == "Spain"


def test_limit_unknown_layout_and_missing_file(tmp_path):
    path = _infoseek(tmp_path)
    assert len(load_benchmark(path, limit=1)) == 1
    odd = _jsonl(tmp_path / "odd.jsonl", [{"foo": 1}])
    with pytest.raises(DataError, match="cannot tell which benchmark.*--format"):
        load_benchmark(odd)
    with pytest.raises(DataError, match="does not exist"):
        load_benchmark(tmp_path / "missing.jsonl")
    with pytest.raises(DataError, match="unknown benchmark format"):
        load_benchmark(path, "vqav2")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_benchmark(bad, "simplevqa")
