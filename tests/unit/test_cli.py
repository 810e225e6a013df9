"""The command line: fast help without torch, one-line errors, data inspect."""

import json
import subprocess
import sys
from pathlib import Path

FIXTURE = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "official_mini_data.parquet"


def run(*args):
    return subprocess.run([sys.executable, "-m", "mmsearch_r1", *args], capture_output=True, text=True, timeout=120)


def test_import_and_help_load_no_torch():
    code = (
        "import sys, mmsearch_r1, mmsearch_r1.cli, mmsearch_r1.config, mmsearch_r1.protocol, mmsearch_r1.reward;"
        "from mmsearch_r1.config import load_config; load_config();"
        "heavy = [m for m in ('torch', 'transformers', 'faiss', 'bm25s', 'pyarrow') if m in sys.modules];"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_help_lists_the_commands():
    # Its speed is measured by bench/cli_startup.py, not asserted here.
    result = run("--help")
    assert result.returncode == 0 and "config" in result.stdout and "data" in result.stdout


def test_config_error_is_one_line_without_traceback():
    result = run("config", "show", "--set", "reward.search_penalty=7")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: config key `reward.search_penalty` must be less than or equal to 1 (got 7)."


def test_unknown_command_and_option_are_usage_errors_without_traceback():
    for args, words in ((("evaluate",), "No such command 'evaluate'"), (("demo", "--bogus"), "No such option: --bogus")):
        result = run(*args)
        assert result.returncode == 2 and words in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_config_show_prints_resolved_toml():
    result = run("config", "show", "--set", "seed=5")
    assert result.returncode == 0 and "seed = 5" in result.stdout


def test_data_inspect_json():
    if not FIXTURE.is_file():
        import pytest

        pytest.skip("the shared fixture file is absent")
    result = run("data", "inspect", str(FIXTURE), "--json", "-n", "2")
    summary = json.loads(result.stdout)
    assert summary["rows"] == 5 and summary["bad_rows"] == []
    assert len(summary["examples"]) == 2 and summary["examples"][0]["answers"][0] == "Spain"


def test_data_inspect_missing_file_is_a_clear_error(tmp_path):
    result = run("data", "inspect", str(tmp_path / "none.parquet"))
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr


def test_demo_on_a_device_torch_cannot_use_stops_before_any_stage(tmp_path):
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU; the refusal is for machines without one")
    result = run("demo", "--device", "cuda", "--out", str(tmp_path / "demo"))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "error: --device is `cuda`, but torch" in result.stderr and "set --device=cpu" in result.stderr
    assert not (tmp_path / "demo").exists()  # refused before the world stage made anything


def test_an_unknown_demo_device_is_one_clear_error(tmp_path):
    result = run("demo", "--device", "gpu", "--out", str(tmp_path / "demo"))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "error: --device is `gpu`; use cpu, cuda or cuda:<index>." in result.stderr
    assert not (tmp_path / "demo").exists()


def test_ask_and_eval_refuse_an_engine_they_cannot_build_before_any_tool(tmp_path):
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU; the refusal is for machines without one")
    # No world given: the default tools' indexes do not exist here, so building the tools first would fail on them.
    from PIL import Image

    from mmsearch_r1.data import VQASample, write_parquet

    Image.new("RGB", (8, 8)).save(tmp_path / "q.png")
    write_parquet([VQASample(id="q0", question="What?", image_bytes=(tmp_path / "q.png").read_bytes(), answers=["x"])], tmp_path / "q.parquet")
    options = ["--model", str(tmp_path / "model"), "--set", "engine.device=cuda"]
    for args in (["ask", "--image", str(tmp_path / "q.png"), "--question", "What?", *options],
                 ["eval", "--data", str(tmp_path / "q.parquet"), "--out", str(tmp_path / "eval"), *options]):
        result = run(*args)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert "error: engine.device is `cuda`, but torch" in result.stderr, result.stderr
        assert not (tmp_path / "eval").exists()  # refused before the output folder is made
    for args in (["ask", "--image", str(tmp_path / "q.png"), "--question", "What?", "--model", str(tmp_path / "model")],
                 ["eval", "--data", str(tmp_path / "q.parquet"), "--out", str(tmp_path / "eval"), "--model", str(tmp_path / "model")]):
        result = run(*args)  # a model folder that holds no checkpoint, refused before the tools too
        assert result.returncode == 2 and f"error: policy folder {tmp_path / 'model'} has no config.json" in result.stderr, result.stderr
        assert not (tmp_path / "eval").exists()


def test_a_path_that_is_not_the_file_asked_for_is_one_clear_error(tmp_path):
    """A binary file where text is read, a folder where a file is read, a file where an output folder goes."""
    from PIL import Image

    png = tmp_path / "q.png"
    Image.new("RGB", (8, 8)).save(png)
    cases = [
        (("config", "show", "--config", png), f"error: config file {png} is not a UTF-8 text file; pass a TOML file, or leave --config out."),
        (("index", "text", "--corpus", png, "--out", tmp_path / "idx"), f"error: corpus file {png} is not a UTF-8 text file"),
        (("config", "show", "--config", tmp_path), f"error: config file {tmp_path} is a folder, not a file"),
        (("data", "inspect", tmp_path), f"error: data file {tmp_path} is a folder, not a file"),
        (("world", "build", "--out", png, "--size", "small"), f"error: {png} is a file, and a folder is needed there"),
        (("world", "build", "--out", png / "sub", "--size", "small"), f"error: {png} is a file, and a folder is needed there"),
    ]
    for args, message in cases:
        result = run(*map(str, args))
        assert result.returncode == 2 and result.stderr.startswith(message) and "Traceback" not in result.stderr, result.stderr


def test_config_docs_piped_is_one_whole_line_a_key():
    lines = run("config", "docs").stdout.splitlines()
    rows = {line.split("\t")[0]: line.split("\t") for line in lines}
    assert all(len(row) == 4 for row in rows.values()) and len(rows) == len(lines) > 100
    assert rows["train.lr_warmup_steps"][2].isdigit() and rows["model.path"][1] == "Path | None"
    assert rows["out_dir"][2] == '"runs/default"' and rows["model.path"][2] == "unset"  # as a config file writes them
