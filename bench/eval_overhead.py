"""Evaluation overhead without a model: what saving, resuming, scoring and reporting cost around rollout.

A scripted engine (instant turns) and in-memory tools stand in for the model and the search backends, so the
figures are the evaluation's own cost. Measured side by side in one run, for N questions x 3 workflows:

- rollout alone (``mmsearch_r1.rollout.rollout`` on every question, nothing saved);
- ``evaluate`` (the same rollouts in batches, each batch appended to JSONL with its images, then scoring,
  bootstrap intervals, results.json, results.md, two plots and the viewer);
- ``report`` alone on the finished folder (re-scoring), and a resumed ``evaluate`` that finds everything done;
- the size of the viewer and of the trajectory files.

    python bench/eval_overhead.py [--questions 300] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import io
import re
import tempfile
import time
from pathlib import Path

import mmsearch_r1.config  # noqa: F401  (loads the config tree before a section module)
from mmsearch_r1.config import ProtocolConfig
from mmsearch_r1.data.schema import VQASample
from mmsearch_r1.engines.config import SamplingConfig
from mmsearch_r1.engines.scripted import ScriptedEngine
from mmsearch_r1.eval.config import EvalConfig
from mmsearch_r1.eval.run import EvalData, evaluate, report
from mmsearch_r1.rollout import rollout
from mmsearch_r1.tools.base import ImageHit, ImageSearch, TextHit, TextSearch, Toolbox


def _samples(n: int) -> list[VQASample]:
    from PIL import Image

    out = []
    for k in range(n):
        buffer = io.BytesIO()
        Image.new("RGB", (96, 96), (k * 37 % 255, k * 91 % 255, 120)).save(buffer, format="PNG")
        out.append(VQASample(f"q{k}", f"Q{k}: which guild has this emblem?", buffer.getvalue(), [f"guild {k}"],
                             category="search_required" if k % 2 else "search_free", search_need=("none", "image", "text", "image_text")[k % 4]))
    return out


def _reply(context) -> str:
    k = int(re.search(r"Q(\d+)", "\n".join(m.text for m in context.messages)).group(1))
    last = [m for m in context.messages if m.role == "user"][-1].text
    if "write a web search query" in last:
        return f"<reason>look it up</reason><text_search>guild {k} emblem</text_search>"
    if "to find pages with similar images" in last and k % 2:
        return "<reason>unknown emblem</reason><search><img></search>"
    return f"<reason>known</reason><answer>guild {k if k % 3 else 'x'}</answer>"


class _Images(ImageSearch):
    def __init__(self):
        from PIL import Image

        self.thumbs = [Image.new("RGB", (64, 64), (i * 40, 200, 90)) for i in range(5)]

    def search(self, image, k=5):
        return [ImageHit(t, f"Guild page {i}", f"https://example.org/{i}") for i, t in enumerate(self.thumbs[:k])]


class _Text(TextSearch):
    def search(self, query, k=5):
        return [TextHit(f"Page {i}", f"https://example.org/p{i}", f"{query}: founded in the 1920s. " * 3) for i in range(k)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    samples = _samples(args.questions)
    toolbox, protocol, sampling = Toolbox(_Images(), _Text()), ProtocolConfig(), SamplingConfig(temperature=0.0)
    workflows = ["direct", "rag", "on_demand"]
    eval_cfg = EvalConfig(workflows=workflows, batch_size=args.batch_size, match="subem")

    started = time.perf_counter()
    for wf in workflows:
        for i in range(0, len(samples), args.batch_size):
            rollout(samples[i:i + args.batch_size], ScriptedEngine(_reply), toolbox, protocol=protocol, sampling=sampling, workflow=wf)
    rollout_s = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        data = [EvalData("bench", samples)]
        started = time.perf_counter()
        evaluate(data, ScriptedEngine(_reply), toolbox, out_dir=out, eval_cfg=eval_cfg, protocol=protocol, sampling=sampling)
        evaluate_s = time.perf_counter() - started
        started = time.perf_counter()
        report(data, workflows, out, eval_cfg)
        report_s = time.perf_counter() - started
        started = time.perf_counter()
        resumed = evaluate(data, ScriptedEngine(_reply), toolbox, out_dir=out, eval_cfg=eval_cfg, protocol=protocol, sampling=sampling)
        resume_s = time.perf_counter() - started
        viewer_mb = (out / "viewer.html").stat().st_size / 1e6
        traj_mb = sum(p.stat().st_size for p in (out / "trajectories").rglob("*") if p.is_file()) / 1e6

    episodes = len(samples) * len(workflows)
    print(f"{args.questions} questions x {len(workflows)} workflows = {episodes} episodes, batch size {args.batch_size}")
    print(f"rollout alone (nothing saved)          {rollout_s:7.2f} s")
    print(f"evaluate (save + score + report)       {evaluate_s:7.2f} s   ({evaluate_s / rollout_s:.2f}x rollout alone)")
    print(f"report alone on the finished folder    {report_s:7.2f} s   ({1000 * report_s / episodes:.2f} ms per episode)")
    print(f"evaluate again, all done (resume path) {resume_s:7.2f} s   (ran {resumed.ran} episodes)")
    print(f"viewer.html {viewer_mb:.2f} MB (at most {eval_cfg.viewer_max} per workflow), trajectory files {traj_mb:.2f} MB")


if __name__ == "__main__":
    main()
