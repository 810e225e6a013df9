"""Build a small demo world on disk (real indexes) and check its files, splits, determinism and search."""

import hashlib
import json
import sys

import pytest
from typer.testing import CliRunner

from mmsearch_r1.data import read_parquet
from mmsearch_r1.world import build_world, load_world
from mmsearch_r1.world.build import OUTPUTS, generate_world
from mmsearch_r1.world.checks import image_recall, text_fact_rate

pytestmark = pytest.mark.slow


def _hashes(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("world"), seed=7, size="small")


def test_world_folder_holds_every_output(world_dir):
    for name in OUTPUTS:
        assert (world_dir / name).exists(), name
    assert json.loads((world_dir / "text_index" / "index.json").read_text())["pages"] == 2 * 20 + 7
    assert json.loads((world_dir / "image_index" / "index.json").read_text())["items"] == 2 * 20
    pages = [json.loads(line) for line in (world_dir / "pages.jsonl").read_text().splitlines()]
    assert all(set(p) == {"url", "title", "text"} for p in pages)
    thumbs = [json.loads(line) for line in (world_dir / "thumbnails" / "metadata.jsonl").read_text().splitlines()]
    assert len(thumbs) == 40 and all((world_dir / "thumbnails" / t["file_name"]).is_file() for t in thumbs)
    assert {t["url"] for t in thumbs} <= {p["url"] for p in pages}


def test_splits_are_labelled_and_heldout_templates_unseen(world_dir):
    world = load_world(world_dir)
    splits = {name: read_parquet(world_dir / f"{name}.parquet") for name in ("train", "test", "heldout")}
    n_facts = sum(len(e.facts) for e in world.entities)
    assert [len(splits[s]) for s in ("train", "test", "heldout")] == [3 * n_facts, n_facts, n_facts]
    for samples in splits.values():
        assert {s.search_need for s in samples} == {"none", "text", "image", "image_text"}
        for s in samples:
            entity = world.entity(s.extra["entity"])
            assert s.search_need == entity.search_need and s.category == entity.category
            assert s.answers == entity.fact(s.extra["attribute"]).answers
    seen = {s.extra["template"] for s in splits["train"] + splits["test"]}
    heldout = {s.extra["template"] for s in splits["heldout"]}
    assert heldout and not seen & heldout


def test_no_question_image_equals_a_thumbnail(world_dir):
    from PIL import Image

    thumbs = {Image.open(p).convert("RGB").resize((84, 84)).tobytes() for p in (world_dir / "thumbnails").glob("*.png")}
    images = [s.image for name in ("train", "test", "heldout") for s in read_parquet(world_dir / f"{name}.parquet")]
    pixels = [im.tobytes() for im in images]
    assert len(set(pixels)) == len(pixels)
    assert not set(pixels) & thumbs


def test_same_seed_gives_byte_identical_files(world_dir, tmp_path):
    again = build_world(tmp_path / "again", seed=7, size="small")
    assert _hashes(again) == _hashes(world_dir)
    assert generate_world(seed=8, size="small").to_json() != (world_dir / "world.json").read_text()


def test_search_finds_the_entity_and_the_fact(world_dir):
    image = image_recall(world_dir)
    text = text_fact_rate(world_dir)
    assert image.questions == len(read_parquet(world_dir / "test.parquet")) * 2
    assert image.recall_at_1 >= 0.9 and image.recall_at_k >= 0.95
    assert text.fact_first >= 0.95 and text.answer_in_top1 >= 0.95


def test_cli_builds_and_reports_errors_in_one_line(tmp_path, monkeypatch, capsys):
    from mmsearch_r1.cli import app, main

    result = CliRunner().invoke(app, ["world", "build", "--out", str(tmp_path / "w"), "--size", "small", "--seed", "1",
                                      "--set", "world.entities=8", "--set", "world.build_indexes=false"])
    assert result.exit_code == 0, result.output
    assert "8 entities" in result.output
    assert len(load_world(tmp_path / "w").entities) == 8
    shown = CliRunner().invoke(app, ["world", "show", str(tmp_path / "w"), "--sheet", str(tmp_path / "sheet.png")])
    assert shown.exit_code == 0, shown.output
    assert load_world(tmp_path / "w").entities[0].name in shown.output
    from PIL import Image

    assert Image.open(tmp_path / "sheet.png").size == (8 * 2 * 84, 1 * (2 * 84 + 24))
    monkeypatch.setattr(sys, "argv", ["mmsearch-r1", "world", "check", str(tmp_path / "missing")])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "world build" in err and "Traceback" not in err
