"""The GRPO trainer end to end: a real tiny Qwen2.5-VL, the Hugging Face engine, rollout, reward, checkpoints.

The task is a toy world small enough for CI: "What colour is the square?" about noisy squares that are all
blue. A tiny policy is first taught the protocol's answer format with a uniformly random one of four colours
(a few seconds of supervised steps with the pretraining code), so it starts at chance (accuracy ≈ 1/4).
GRPO must then move its answers to the rewarded colour. That checks the optimisation end to end (rollout,
reward, advantages, masks, KL, optimizer), not visual learning: reading colours from images takes this tiny
model far more steps than a CI test can afford. Prompts are shortened through ``protocol.template_dir``
to keep steps fast.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from mmsearch_r1.config import load_config  # noqa: E402
from mmsearch_r1.train.metrics import TIMING_FIELDS, read_metrics  # noqa: E402

pytestmark = pytest.mark.slow

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (40, 60, 220), "yellow": (230, 210, 40)}
QUESTION = "What colour is the square?"
TINY_MODEL = [
    "model.hidden_size=64", "model.num_layers=2", "model.num_heads=4", "model.num_kv_heads=2", "model.intermediate_size=128",
    "model.vision_hidden_size=32", "model.vision_depth=1", "model.vision_heads=2", "model.vision_intermediate_size=64",
    "model.image_size=28", "model.vocab_size=420",
]


def _png(rgb, seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    noise = np.random.default_rng(seed).integers(-12, 13, size=(28, 28, 3))
    pixels = np.clip(np.array(rgb)[None, None, :] + noise, 0, 255).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _samples():
    from mmsearch_r1.data import VQASample

    return [VQASample(f"square-{i}", QUESTION, _png(COLOURS["blue"], seed=i), ["blue"], data_source="toy_squares") for i in range(16)]


def _teach_format(policy, samples, templates, steps: int = 60) -> None:
    """Supervised steps on demonstrations that answer a uniformly random colour (format, no knowledge)."""
    from mmsearch_r1.models.demos import Demonstration, Piece
    from mmsearch_r1.models.encode import encode_demonstration
    from mmsearch_r1.models.pretrain import collate, masked_lm_loss
    from mmsearch_r1.protocol import first_turn

    encoded = []
    for sample in samples[:2]:  # every colour as the answer
        for answer in COLOURS:
            demo = Demonstration(sample.id, "none", first_turn(QUESTION, templates), [sample.image])
            demo.add_turn([Piece(f"<reason>I see it.</reason><answer>{answer}</answer>")], "answer")
            encoded.append(encode_demonstration(demo, policy))
    batch = collate(encoded, policy.tokenizer.pad_token_id, policy.processor.image_token_id)
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=5e-3)
    policy.model.train()
    for _ in range(steps):
        logits = policy.model(**batch["inputs"]).logits
        loss = masked_lm_loss(logits, batch["inputs"]["input_ids"], batch["loss_mask"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    policy.model.eval()


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A training Parquet file, short prompt templates and a format-taught tiny policy folder."""
    from mmsearch_r1.data import write_parquet
    from mmsearch_r1.models import build_tiny_policy, build_tokenizer
    from mmsearch_r1.protocol import Templates

    root = tmp_path_factory.mktemp("toy")
    samples = _samples()
    write_parquet(samples, root / "train.parquet")
    (root / "templates").mkdir()
    (root / "templates" / "system.txt").write_text("")
    (root / "templates" / "user_prompt.txt").write_text("Answer inside <answer></answer>. Question: {question}")
    templates = Templates.load(root / "templates")
    torch.manual_seed(0)
    cfg = load_config(None, TINY_MODEL)
    texts = [QUESTION, templates.user_prompt, *COLOURS, "<reason>I see it.</reason>"] * 4
    policy = build_tiny_policy(cfg.model, build_tokenizer(texts, vocab_size=cfg.model.vocab_size), seed=0)
    _teach_format(policy, samples, templates)
    policy.save(root / "policy")
    _build_indexes(root, samples)
    return root


def _build_indexes(root: Path, samples) -> None:
    """Real local search indexes over one page and one thumbnail per colour."""
    from mmsearch_r1.tools.local_image import build_image_index
    from mmsearch_r1.tools.local_text import build_text_index

    pages = [{"url": f"http://toy.test/{c}", "title": f"The {c} square", "text": f"This square is {c}."} for c in COLOURS]
    build_text_index(pages, root / "text_index")
    build_image_index([(s.image, f"A {s.answers[0]} square", f"http://toy.test/{i}") for i, s in enumerate(samples[:4])], root / "image_index")


def _overrides(toy: Path, out: Path, **train) -> list[str]:
    values = {
        "steps": 5, "prompts_per_step": 4, "group_size": 4, "lr": 1e-3, "checkpoint_every": 2, "micro_batch_size": 16,
        "progress": False, "threads": 1, "data": str(toy / "train.parquet"), **train,
    }
    return [
        f"out_dir={out}", f"model.path={toy / 'policy'}", f"protocol.template_dir={toy / 'templates'}",
        "engine.sampling.max_new_tokens=16", "tools.cache.mode=off",
        f"tools.image.index_dir={toy / 'image_index'}", f"tools.text.index_dir={toy / 'text_index'}",
        *[f"train.{k}={json.dumps(v) if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else v}" for k, v in values.items()],
    ]


def _without_timing(rows) -> list[dict]:
    return [{k: v for k, v in asdict(r).items() if k not in TIMING_FIELDS} for r in rows]


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "mmsearch_r1", "train", *args]


def test_sigkill_then_resume_repeats_the_uninterrupted_metrics(toy, tmp_path):
    from mmsearch_r1.train.trainer import train

    steps = 5
    reference = tmp_path / "uninterrupted"
    train(load_config(None, _overrides(toy, reference, steps=steps)))
    expected = read_metrics(reference / "metrics.jsonl")
    assert [r.step for r in expected] == list(range(1, steps + 1))

    killed = tmp_path / "killed"
    sets = [a for o in _overrides(toy, killed, steps=steps) for a in ("--set", o)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(_cli(sets), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = killed / "metrics.jsonl"
    deadline = time.monotonic() + 150
    # Kill it inside step 4: after step 3 is logged (the newest checkpoint is step 2, so step 3 is redone).
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    assert process.poll() is None, f"the run ended before it could be killed: {process.stderr.read().decode()[-2000:]}"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    logged_before_kill = len(metrics.read_text().splitlines())
    assert 3 <= logged_before_kill < steps
    assert (killed / "checkpoints" / "step_000002").is_dir()

    resumed = subprocess.run(_cli([*sets, "--resume"]), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got = read_metrics(metrics)
    assert [r.step for r in got] == list(range(1, steps + 1))
    assert _without_timing(got) == _without_timing(expected)
    # the runs really did train: the policy moved away from the reference, with varied rewards
    assert any(r.kl > 0 for r in got) and len({r.reward for r in got}) > 1


def test_a_second_start_in_the_same_folder_is_refused(toy, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints" / "step_000001").mkdir(parents=True)
    sets = [a for o in _overrides(toy, out, steps=1) for a in ("--set", o)]
    result = subprocess.run(_cli(sets), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "--resume" in result.stderr and "Traceback" not in result.stderr


def test_grpo_raises_the_mean_reward(toy, tmp_path):
    from mmsearch_r1.train.trainer import train

    out = tmp_path / "learn"
    train(load_config(None, _overrides(toy, out, steps=12, prompts_per_step=8, group_size=8, checkpoint_every=100, threads=2)))
    rows = read_metrics(out / "metrics.jsonl")
    first, last = rows[:3], rows[-3:]
    before = sum(r.reward for r in first) / len(first)
    after = sum(r.reward for r in last) / len(last)
    print("rewards per step:", [round(r.reward, 3) for r in rows], "format:", [round(r.format_rate, 2) for r in rows])
    assert after - before > 0.15, [round(r.reward, 3) for r in rows]
    assert all(r.format_rate > 0.5 for r in rows)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_runs_on_a_gpu(toy, tmp_path):
    from mmsearch_r1.train.trainer import train

    out = tmp_path / "gpu"
    final = train(load_config(None, _overrides(toy, out, steps=3, device="cuda", checkpoint_every=2)))
    rows = read_metrics(out / "metrics.jsonl")
    assert [r.step for r in rows] == [1, 2, 3]
    assert all(r.episodes == 16 and r.sampled_tokens > 0 for r in rows)
    assert (final / "config.json").is_file() and (out / "checkpoints" / "step_000003").is_dir()
