"""veRL/FVQA Parquet I/O: the real fixture, round trips, and one clear error per bad row."""

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmsearch_r1.data import VQASample, read_parquet, write_parquet
from mmsearch_r1.data.parquet import sample_to_row, scan_parquet
from mmsearch_r1.errors import DataError

FIXTURE = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "official_mini_data.parquet"


def png_bytes(size=(8, 6), color="red"):
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def make_sample(i=0, **kw):
    base = dict(id=f"s{i}", question=f"What is thing {i}?", image_bytes=png_bytes(), answers=["Zorbla", "zorblas"],
                data_source="demo", category="search_required", search_need="image_text", extra={"entity": "e1"})
    base.update(kw)
    return VQASample(**base)


@pytest.mark.skipif(not FIXTURE.is_file(), reason="the shared fixture file is absent")
def test_reads_the_official_fvqa_rows():
    samples = read_parquet(FIXTURE)
    assert len(samples) == 5
    first = samples[0]
    assert first.question == "What is the country of origin of this food?"
    assert first.answers[0] == "Spain"
    assert "Kingdom of Spain" in first.answers and first.answers.count("Spain") == 1
    assert first.image.size == (384, 512)  # a real JPEG decodes
    assert first.data_source == "mmsearch_r1/infoseek_train_split"
    assert samples[1].ground_truth == "Gautama Buddha" and len(samples[1].answers) == 28
    assert len({s.id for s in samples}) == 5


@pytest.mark.skipif(not FIXTURE.is_file(), reason="the shared fixture file is absent")
def test_official_rows_round_trip(tmp_path):
    samples = read_parquet(FIXTURE)
    write_parquet(samples, tmp_path / "copy.parquet")
    back = read_parquet(tmp_path / "copy.parquet")
    assert [(s.id, s.question, s.answers, s.image_bytes) for s in back] == [(s.id, s.question, s.answers, s.image_bytes) for s in samples]


def test_round_trip_keeps_labels_and_extra(tmp_path):
    samples = [make_sample(0), make_sample(1, category="search_free", search_need="none", extra={}, image_url="http://x/1.png")]
    write_parquet(samples, tmp_path / "d.parquet")
    back = read_parquet(tmp_path / "d.parquet")
    assert back == samples


def test_written_file_is_deterministic(tmp_path):
    samples = [make_sample(i) for i in range(3)]
    a, b = write_parquet(samples, tmp_path / "a.parquet"), write_parquet(samples, tmp_path / "b.parquet")
    assert a.read_bytes() == b.read_bytes()


def test_written_file_has_the_verl_columns(tmp_path):
    write_parquet([make_sample()], tmp_path / "d.parquet")
    table = pq.read_table(tmp_path / "d.parquet")
    assert table.column_names[:5] == ["prompt", "images", "reward_model", "data_source", "image_urls"]
    row = table.to_pylist()[0]
    assert row["prompt"] == [{"content": "What is thing 0?", "role": "user"}]
    assert json.loads(row["reward_model"]["candidate_answers"]) == ["Zorbla", "zorblas"]
    assert row["reward_model"]["style"] == "rule"


def write_rows(path, rows):
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, path)
    return path


def good_row(i=0):
    row = sample_to_row(make_sample(i), i)
    return row


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda r: r.pop("prompt"), "prompt"),
        (lambda r: r.update(prompt=[{"role": "system", "content": "hi"}]), "prompt"),
        (lambda r: r.update(images=[{"bytes": b"not an image", "path": None}]), "images"),
        (lambda r: r.update(images=[]), "images"),
        (lambda r: r.update(images=[{"bytes": png_bytes((300, 300)), "path": None}]), "images"),
        (lambda r: r["reward_model"].update(candidate_answers="Spain, ES"), "reward_model.candidate_answers"),
        (lambda r: r["reward_model"].update(candidate_answers='{"a": 1}'), "reward_model.candidate_answers"),
        (lambda r: r["reward_model"].update(ground_truth=""), "reward_model.ground_truth"),
        (lambda r: r.update(category="maybe"), "category"),
    ],
)
def test_bad_row_raises_naming_row_and_field(tmp_path, mutate, field):
    rows = [good_row(0), good_row(1), good_row(2)]
    mutate(rows[1])
    if "prompt" not in rows[1]:
        rows[1]["prompt"] = None
    path = write_rows(tmp_path / "bad.parquet", rows)
    with pytest.raises(DataError) as error:
        read_parquet(path, max_pixels=200 * 200)
    message = str(error.value)
    assert "row 1" in message and f"`{field}`" in message and "skip_bad" in message


def test_skip_bad_skips_and_counts(tmp_path, caplog):
    rows = [good_row(i) for i in range(4)]
    rows[0]["images"] = [{"bytes": b"junk", "path": None}]
    rows[2]["reward_model"]["candidate_answers"] = "[unclosed"
    path = write_rows(tmp_path / "bad.parquet", rows)
    samples = read_parquet(path, skip_bad=True)
    assert [s.id for s in samples] == ["s1", "s3"]
    assert [i for i, _ in scan_parquet(path).bad_rows] == [0, 2]
    assert "skipped 2 bad rows of 4" in caplog.text


def test_image_by_relative_path(tmp_path):
    (tmp_path / "img.png").write_bytes(png_bytes(color="blue"))
    row = good_row()
    row["images"] = [{"bytes": None, "path": "img.png"}]
    path = write_rows(tmp_path / "d.parquet", [row])
    assert read_parquet(path)[0].image.getpixel((0, 0)) == (0, 0, 255)


def test_missing_column_and_missing_file(tmp_path):
    path = write_rows(tmp_path / "d.parquet", [{"question": "q"}])
    with pytest.raises(DataError, match="has no column `prompt`"):
        read_parquet(path)
    with pytest.raises(DataError, match="does not exist"):
        read_parquet(tmp_path / "none.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_parquet(tmp_path / "junk.parquet")


def test_image_marker_is_dropped_from_the_question(tmp_path):
    row = good_row()
    row["prompt"] = [{"role": "user", "content": "<image>\nWhat is it?"}]
    assert read_parquet(write_rows(tmp_path / "d.parquet", [row]))[0].question == "What is it?"
