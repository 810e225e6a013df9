"""Run an evaluation: every data set in every workflow, resumable, then score and report.

Layout of an output folder::

    <out>/trajectories/<dataset>.<workflow>.jsonl   one trajectory per line, appended batch by batch
    <out>/trajectories/<dataset>.<workflow>_images/ their images (PNG, by content hash)
    <out>/results.json, results.md                 metrics per data set, workflow and label
    <out>/accuracy_vs_search_ratio.png, per_label.png
    <out>/viewer.html                              the trajectory viewer
    <out>/judge_cache/                             cached judge verdicts (match = judge)

Resuming: trajectories are appended to their JSONL file as soon as their batch finishes; a restarted run reads
the ids already there and runs only the others (a line torn by a crash is dropped first). Metrics only count
the samples of the data files given, so shrinking ``--limit`` or a data file leaves old lines unused.

Latency: rollout runs a batch of episodes together, so each trajectory records its batch's wall time divided
by the batch size (``meta.latency_s``, amortized seconds per question) and the batch's own time
(``meta.batch_latency_s``).

Reproducibility: greedy decoding (the default) gives the same trajectories on every run. With sampling, each
batch's seed is the run seed plus a hash of the batch's first sample id, so an uninterrupted run with the same
batch size is reproducible.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from mmsearch_r1.errors import ConfigError, DataError
from mmsearch_r1.protocol import workflow_name
from mmsearch_r1.progress import progress_bar

if TYPE_CHECKING:
    from mmsearch_r1.config import ProtocolConfig, RewardConfig
    from mmsearch_r1.data.schema import VQASample
    from mmsearch_r1.engines.base import Engine
    from mmsearch_r1.engines.config import SamplingConfig
    from mmsearch_r1.eval.config import EvalConfig
    from mmsearch_r1.eval.judge import LLMJudge
    from mmsearch_r1.eval.metrics import Metrics
    from mmsearch_r1.protocol import Templates
    from mmsearch_r1.tools.base import Toolbox
    from mmsearch_r1.trajectory import Trajectory

log = logging.getLogger(__name__)


@dataclass
class EvalData:
    """One data set to evaluate: its name in the reports and its samples (ids unique)."""

    name: str
    samples: list["VQASample"]


@dataclass
class EvalResult:
    """What an evaluation wrote, and its metrics table ``{dataset: {workflow: Metrics}}``."""

    out_dir: Path
    table: dict[str, dict[str, "Metrics"]]
    files: dict[str, Path] = field(default_factory=dict)
    ran: int = 0  # episodes run by this call (0 when everything was already done)


# --- names and files -----------------------------------------------------------------------------


def parse_workflows(text: str | Sequence[str]) -> list[str]:
    """Workflow names from ``"direct,rag,on-demand"`` (dashes or underscores), in the order given.

    >>> parse_workflows("direct, rag,on-demand")
    ['direct', 'rag', 'on_demand']
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    names = [workflow_name(item) for item in items if item.strip()]
    if not names:
        raise ConfigError("no workflow given; pass --workflow direct,rag,on-demand (or a part of it).")
    return list(dict.fromkeys(names))


def dataset_names(paths: Sequence[Path]) -> list[str]:
    """Report names for data files: the file stem, suffixed with a number when two stems collide."""
    names: list[str] = []
    for path in paths:
        stem = Path(path).stem
        name, k = stem, 2
        while name in names:
            name, k = f"{stem}_{k}", k + 1
        names.append(name)
    return names


def unique_samples(samples: Sequence["VQASample"], name: str) -> list["VQASample"]:
    """The samples with duplicate ids dropped (the first is kept): resuming is by sample id."""
    seen: dict[str, "VQASample"] = {}
    for s in samples:
        seen.setdefault(s.id, s)
    if len(seen) < len(samples):
        log.warning("%s: %d samples share an id with an earlier one and are skipped", name, len(samples) - len(seen))
    return list(seen.values())


def limited(data: Sequence[EvalData], limit: int | None) -> list[EvalData]:
    """Each data set cut to its first ``limit`` samples (``eval.limit``; None keeps all)."""
    return [EvalData(d.name, d.samples[:limit] if limit is not None else list(d.samples)) for d in data]


def trajectory_file(out_dir: Path, dataset: str, workflow: str) -> Path:
    return Path(out_dir) / "trajectories" / f"{dataset}.{workflow}.jsonl"


def finished_ids(path: Path) -> set[str]:
    """Sample ids already in a trajectory file; a torn last line (an interrupted write) is removed first."""
    if not path.is_file():
        return set()
    lines = path.read_text().splitlines(keepends=True)
    ids: set[str] = set()
    good: list[str] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            ids.add(json.loads(line)["sample_id"])
            good.append(line if line.endswith("\n") else line + "\n")
        except (json.JSONDecodeError, KeyError):
            if i != len(lines) - 1:
                raise DataError(f"{path}, line {i + 1} is not a trajectory; delete the line or the file to re-run those samples.") from None
            log.warning("%s: dropping a torn last line left by an interrupted run", path)
    if len(good) != sum(1 for line in lines if line.strip()):
        path.write_text("".join(good))
    return ids


def pending(data: Sequence[EvalData], workflows: Sequence[str], out_dir: str | Path) -> int:
    """How many (sample, workflow) episodes are not yet in the output folder."""
    return sum(len({s.id for s in d.samples} - finished_ids(trajectory_file(Path(out_dir), d.name, wf))) for d in data for wf in workflows)


# --- running -------------------------------------------------------------------------------------


def batch_seed(seed: int, samples: Sequence["VQASample"]) -> int:
    """The rollout seed of a batch: the run seed plus a hash of its first sample id."""
    return seed + zlib.crc32(samples[0].id.encode())


def run_workflow(
    data: EvalData,
    workflow: str,
    engine: "Engine",
    toolbox: "Toolbox | None",
    *,
    out_dir: Path,
    protocol: "ProtocolConfig",
    sampling: "SamplingConfig",
    batch_size: int,
    seed: int = 0,
    templates: "Templates | None" = None,
    on_batch=None,
) -> int:
    """Run the samples of ``data`` not yet in its trajectory file, batch by batch; return how many ran."""
    from mmsearch_r1.rollout import rollout
    from mmsearch_r1.trajectory import write_jsonl

    path = trajectory_file(out_dir, data.name, workflow)
    path.parent.mkdir(parents=True, exist_ok=True)
    done = finished_ids(path)
    todo = [s for s in data.samples if s.id not in done]
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        began = time.perf_counter()
        trajectories = rollout(batch, engine, toolbox, n=1, protocol=protocol, sampling=sampling, seed=batch_seed(seed, batch),
                               workflow=workflow, templates=templates)
        elapsed = time.perf_counter() - began
        for trajectory, sample in zip(trajectories, batch):
            trajectory.meta.update(dataset=data.name, workflow=workflow, question=sample.question,
                                   latency_s=elapsed / len(batch), batch_latency_s=elapsed)
        write_jsonl(trajectories, path, append=True)
        if on_batch is not None:
            on_batch(len(batch))
    return len(todo)


# --- scoring -------------------------------------------------------------------------------------


def read_trajectories(path: Path, keep: set[str], *, with_images: int = 0) -> list["Trajectory"]:
    """The trajectories of ``path`` whose sample id is in ``keep`` (the last line wins for a repeated id);
    images are loaded for the first ``with_images`` only (the viewer's), the others get an empty image list."""
    from mmsearch_r1.trajectory import Trajectory

    image_dir = path.parent / f"{path.stem}_images"
    by_id: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                if record["sample_id"] in keep:
                    by_id[record["sample_id"]] = record
    out = []
    for i, record in enumerate(by_id.values()):
        if i >= with_images:
            record = {**record, "images": []}
        out.append(Trajectory.from_json(record, image_dir))
    return out


def verdicts(trajectories: Sequence["Trajectory"], match: str, judge: "LLMJudge | None" = None, *, progress: bool = False) -> list[bool]:
    """Whether each final answer is correct, by ``em``/``subem`` (``reward.is_correct``) or the LLM judge."""
    from mmsearch_r1.reward import is_correct

    if match != "judge":
        return [is_correct(t.final_answer, t.gold_answers, match) for t in trajectories]
    if judge is None:
        raise ConfigError("eval.match is `judge` but no judge was given; set eval.judge.base_url and eval.judge.model.")
    from mmsearch_r1.eval.judge import JudgeItem

    items = [JudgeItem(str(t.meta.get("question", "")), t.gold_answers, t.final_answer) for t in trajectories]
    return judge.judge_many(items, progress=progress)


def attach_rewards(trajectories: Sequence["Trajectory"], reward_cfg: "RewardConfig") -> None:
    """Fill ``trajectory.reward`` with the training reward of each episode (shown in the viewer)."""
    from mmsearch_r1.reward import score

    for t in trajectories:
        if t.reward is None and t.assistant_turns and t.gold_answers:
            t.reward = score(t.assistant_turns, t.gold_answers, format_weight=reward_cfg.format_weight,
                             search_penalty=reward_cfg.search_penalty, match=reward_cfg.match,
                             per_search_penalty=reward_cfg.per_search_penalty)


def report(
    data: Sequence[EvalData],
    workflows: Sequence[str],
    out_dir: str | Path,
    eval_cfg: "EvalConfig",
    *,
    reward_cfg: "RewardConfig | None" = None,
    judge: "LLMJudge | None" = None,
    seed: int = 0,
    progress: bool = False,
) -> EvalResult:
    """Score the trajectories already in ``out_dir`` and write results.json, results.md, plots and the viewer."""
    from mmsearch_r1.config import RewardConfig
    from mmsearch_r1.eval.metrics import breakdown, outcome_of
    from mmsearch_r1.eval.report import plot_accuracy_vs_search_ratio, plot_per_label, write_markdown, write_results_json
    from mmsearch_r1.eval.viewer import ViewerEntry, write_viewer

    out_dir = Path(out_dir)
    reward_cfg = reward_cfg or RewardConfig()
    data = limited(data, eval_cfg.limit)
    outcomes, entries, counts = [], [], {}
    for d in data:
        for wf in workflows:
            trajectories = read_trajectories(trajectory_file(out_dir, d.name, wf), {s.id for s in d.samples}, with_images=eval_cfg.viewer_max)
            counts[f"{d.name}.{wf}"] = {"evaluated": len(trajectories), "samples": len(d.samples)}
            if not trajectories:
                continue
            for t in trajectories:
                t.meta.setdefault("dataset", d.name)
                t.meta.setdefault("workflow", wf)
            correct = verdicts(trajectories, eval_cfg.match, judge, progress=progress)
            attach_rewards(trajectories, reward_cfg)
            outcomes += [outcome_of(t, c) for t, c in zip(trajectories, correct)]
            entries += [ViewerEntry(t, c) for t, c in zip(trajectories[:eval_cfg.viewer_max], correct)]
    if not outcomes:
        raise DataError(f"{out_dir} holds no trajectories for these data files and workflows; run the evaluation first.")
    table = breakdown(outcomes, bootstrap_samples=eval_cfg.bootstrap_samples, level=eval_cfg.ci_level, seed=seed)
    extra = {"workflows": list(workflows), "ci_level": eval_cfg.ci_level, "bootstrap_samples": eval_cfg.bootstrap_samples, "counts": counts}
    files = {
        "results": write_results_json(table, out_dir / "results.json", match=eval_cfg.match, extra=extra),
        "table": write_markdown(table, out_dir / "results.md", match=eval_cfg.match, ci_level=eval_cfg.ci_level),
        "accuracy_plot": plot_accuracy_vs_search_ratio(table, out_dir / "accuracy_vs_search_ratio.png"),
        "label_plot": plot_per_label(table, out_dir / "per_label.png"),
        "viewer": write_viewer(entries, out_dir / "viewer.html", title=f"mmsearch-r1 evaluation: {out_dir.name}", max_px=eval_cfg.viewer_image_px),
    }
    return EvalResult(out_dir, table, files)


def evaluate(
    data: Sequence[EvalData],
    engine: "Engine",
    toolbox: "Toolbox | None",
    *,
    out_dir: str | Path,
    eval_cfg: "EvalConfig",
    protocol: "ProtocolConfig",
    sampling: "SamplingConfig",
    reward_cfg: "RewardConfig | None" = None,
    judge: "LLMJudge | None" = None,
    seed: int = 0,
    templates: "Templates | None" = None,
    progress: bool = False,
) -> EvalResult:
    """Run every data set in every workflow of ``eval_cfg`` (skipping finished samples), then ``report``.

    The same engine and tools serve all workflows; decoding is greedy unless ``eval_cfg.greedy`` is false.
    """
    out_dir = Path(out_dir)
    data = limited(data, eval_cfg.limit)
    workflows = parse_workflows(eval_cfg.workflows)
    if eval_cfg.greedy:
        sampling = sampling.model_copy(update={"temperature": 0.0})
    total = sum(len(d.samples) for d in data) * len(workflows)
    ran = 0
    with progress_bar("evaluating", total, enabled=progress) as advance:
        for d in data:
            for wf in workflows:
                advance(len(finished_ids(trajectory_file(out_dir, d.name, wf)) & {s.id for s in d.samples}))
                ran += run_workflow(d, wf, engine, toolbox, out_dir=out_dir, protocol=protocol, sampling=sampling,
                                    batch_size=eval_cfg.batch_size, seed=seed, templates=templates, on_batch=advance)
    result = report(data, workflows, out_dir, eval_cfg, reward_cfg=reward_cfg, judge=judge, seed=seed, progress=progress)
    result.ran = ran
    return result
