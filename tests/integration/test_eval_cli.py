"""The `mmsearch-r1 eval` command: argument handling, clear errors, and --report-only re-scoring."""

import io
import json
import sys

import pytest
from PIL import Image

from mmsearch_r1.cli import main
from mmsearch_r1.config import ProtocolConfig
from mmsearch_r1.data import write_parquet
from mmsearch_r1.data.schema import VQASample
from mmsearch_r1.engines.config import SamplingConfig
from mmsearch_r1.engines.scripted import ScriptedEngine
from mmsearch_r1.eval.config import EvalConfig
from mmsearch_r1.eval.run import EvalData, evaluate


def _cli(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["mmsearch-r1", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as done:
        code = done.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _png():
    buffer = io.BytesIO()
    Image.new("RGB", (28, 28), (90, 20, 20)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_missing_data_file_is_one_line_without_traceback(monkeypatch, capsys, tmp_path):
    code, text = _cli(monkeypatch, capsys, "eval", "--data", tmp_path / "nope.parquet", "--out", tmp_path / "o", "--workflow", "direct")
    assert code == 2 and "error: data file" in text and "does not exist" in text and "Traceback" not in text


def test_unknown_workflow_is_refused(monkeypatch, capsys, tmp_path):
    code, text = _cli(monkeypatch, capsys, "eval", "--data", tmp_path / "x.parquet", "--out", tmp_path / "o", "--workflow", "always")
    assert code == 2 and "workflow `always` is unknown" in text


def test_report_only_rescoring_with_another_match_rule(monkeypatch, capsys, tmp_path):
    samples = [VQASample(f"s{k}", f"Q{k}?", _png(), [f"rex {k}"]) for k in range(3)]
    data_a, data_b = write_parquet(samples, tmp_path / "a" / "test.parquet"), write_parquet(samples[:2], tmp_path / "b" / "test.parquet")
    out = tmp_path / "out"
    engine = ScriptedEngine(lambda c: "<reason>r</reason><answer>the rex 0 dog</answer>" if "Q0" in c.messages[-1].text
                            else "<reason>r</reason><answer>rex 1</answer>")
    # names as the CLI gives them: two files with the same stem become test and test_2
    evaluate([EvalData("test", samples), EvalData("test_2", samples[:2])], engine, None, out_dir=out,
             eval_cfg=EvalConfig(workflows=["direct"], bootstrap_samples=0), protocol=ProtocolConfig(), sampling=SamplingConfig())
    code, text = _cli(monkeypatch, capsys, "eval", "--data", data_a, data_b, "--out", out, "--workflow", "direct", "--report-only",
                      "--match", "em", "--set", "eval.bootstrap_samples=0")
    assert code == 0, text
    results = json.loads((out / "results.json").read_text())
    assert results["match"] == "em"
    assert results["datasets"]["test"]["direct"]["accuracy"] == pytest.approx(1 / 3)  # only "rex 1" matches exactly
    assert results["datasets"]["test_2"]["direct"]["n"] == 2 and "all" in results["datasets"]
    code, text = _cli(monkeypatch, capsys, "eval", "--data", data_a, "--out", out, "--workflow", "direct", "--report-only", "--match", "subem")
    results = json.loads((out / "results.json").read_text())
    assert results["datasets"]["test"]["direct"]["accuracy"] == pytest.approx(2 / 3)  # "the rex 0 dog" holds "rex 0"
    assert (out / "config.toml").is_file() and "viewer" in text


def test_help_explains_the_command(monkeypatch, capsys):
    code, text = _cli(monkeypatch, capsys, "eval", "--help")
    assert code == 0 and "--workflow" in text and "--report-only" in text and "on-demand" in text


def test_report_only_with_the_llm_judge(monkeypatch, capsys, tmp_path):
    from test_eval_judge import FakeJudgeServer  # the loopback judge of the judge tests, same folder

    samples = [VQASample(f"s{k}", f"Q{k}?", _png(), [f"rex {k}"]) for k in range(3)]
    data = write_parquet(samples, tmp_path / "test.parquet")
    out = tmp_path / "out"
    engine = ScriptedEngine(lambda c: "<reason>r</reason><answer>Rex 1, the dog</answer>")
    evaluate([EvalData("test", samples)], engine, None, out_dir=out, eval_cfg=EvalConfig(workflows=["direct"], bootstrap_samples=0),
             protocol=ProtocolConfig(), sampling=SamplingConfig())
    with FakeJudgeServer() as server:
        code, text = _cli(monkeypatch, capsys, "eval", "--data", data, "--out", out, "--workflow", "direct", "--report-only",
                          "--match", "judge", "--judge-url", server.url, "--judge-model", "fake-judge")
        assert code == 0, text
        assert len(server.requests) == 3 and all("Question: Q" in r["messages"][0]["content"] for r in server.requests)
    results = json.loads((out / "results.json").read_text())
    assert results["match"] == "judge" and results["datasets"]["test"]["direct"]["accuracy"] == pytest.approx(1 / 3)
    assert (out / "judge_cache").is_dir()
