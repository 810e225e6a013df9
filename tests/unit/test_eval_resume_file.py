"""Reading a trajectory file for resuming: ids found, a torn last line dropped, a damaged middle line refused."""

import json

import pytest

from mmsearch_r1.errors import DataError
from mmsearch_r1.eval.run import dataset_names, finished_ids, unique_samples
from mmsearch_r1.data.schema import VQASample


def test_torn_last_line_is_dropped_and_the_file_repaired(tmp_path):
    path = tmp_path / "d.on_demand.jsonl"
    path.write_text(json.dumps({"sample_id": "a"}) + "\n" + json.dumps({"sample_id": "b"}) + "\n" + '{"sample_id": "c", "mess')
    assert finished_ids(path) == {"a", "b"}
    assert path.read_text().count("\n") == 2 and "mess" not in path.read_text()
    assert finished_ids(tmp_path / "missing.jsonl") == set()


def test_damaged_middle_line_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "d.rag.jsonl"
    path.write_text(json.dumps({"sample_id": "a"}) + "\nnot json\n" + json.dumps({"sample_id": "b"}) + "\n")
    with pytest.raises(DataError, match="line 2 is not a trajectory"):
        finished_ids(path)


def test_dataset_names_and_duplicate_ids():
    assert dataset_names(["a/test.parquet", "b/test.parquet", "c/heldout.parquet", "d/test.jsonl"]) == ["test", "test_2", "heldout", "test_3"]
    samples = [VQASample("x", "q", b"", ["a"]), VQASample("x", "q2", b"", ["b"]), VQASample("y", "q", b"", ["c"])]
    assert [s.question for s in unique_samples(samples, "d")] == ["q", "q"]
