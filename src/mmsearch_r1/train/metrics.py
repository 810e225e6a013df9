"""Per-step training metrics: what each step's episodes did, what the update did, and where they are written.

``StepMetrics`` is one JSON line of ``<out_dir>/metrics.jsonl``. ``MetricsLog`` writes it there and, when
asked, to TensorBoard and Weights & Biases (both optional, imported only when switched on).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from mmsearch_r1.errors import ConfigError

if TYPE_CHECKING:
    from mmsearch_r1.trajectory import Trajectory

# Wall-clock fields differ between two runs of the same seed; every other field must match exactly.
TIMING_FIELDS = ("step_time_s", "rollout_time_s", "update_time_s")


@dataclass
class EpisodeStats:
    """Means over one step's episodes (rates in [0, 1]) and totals of tools and tokens."""

    reward: float
    accuracy: float
    format_rate: float
    search_ratio: float
    image_search_ratio: float
    text_search_ratio: float
    searches_per_episode: float
    tool_failures: int
    tokens: int
    sampled_tokens: int
    episodes: int
    search_ratio_free: float | None  # over episodes of search_free questions (None: none this step)
    search_ratio_required: float | None  # over episodes of search_required questions


@dataclass
class UpdateStats:
    """Token means over one step's update (all optimizer steps of all passes) and the last gradient norm."""

    policy_loss: float
    kl: float
    entropy: float
    clip_fraction: float
    grad_norm: float


@dataclass
class StepMetrics(UpdateStats, EpisodeStats):
    """One line of ``metrics.jsonl``: the step (1-based), its episodes, its update, the schedule, the clock.

    The episode and update fields come from ``EpisodeStats`` and ``UpdateStats``; ``step`` is written first.
    """

    step: int
    lr: float
    search_penalty: float
    step_time_s: float
    rollout_time_s: float
    update_time_s: float

    @classmethod
    def join(cls, step: int, episodes: EpisodeStats, update: UpdateStats, **schedule_and_clock: float) -> "StepMetrics":
        return cls(step=step, **asdict(episodes), **asdict(update), **schedule_and_clock)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def episode_stats(trajectories: Sequence["Trajectory"]) -> EpisodeStats:
    """Summarize scored trajectories (each with its ``reward`` set) into one step's episode statistics.

    Search ratios count episodes whose tools actually ran (``image_searches``/``text_searches``).
    """
    if any(t.reward is None for t in trajectories):
        raise ValueError("episode_stats needs scored trajectories; score them first.")
    return EpisodeStats(
        reward=_mean([t.reward.reward for t in trajectories]),
        accuracy=_mean([t.reward.accuracy for t in trajectories]),
        format_rate=_mean([t.reward.format for t in trajectories]),
        search_ratio=_mean([float(t.searches > 0) for t in trajectories]),
        image_search_ratio=_mean([float(t.image_searches > 0) for t in trajectories]),
        text_search_ratio=_mean([float(t.text_searches > 0) for t in trajectories]),
        searches_per_episode=_mean([float(t.searches) for t in trajectories]),
        tool_failures=sum(t.tool_failures for t in trajectories),
        tokens=sum(len(t.token_ids) for t in trajectories),
        sampled_tokens=sum(sum(t.loss_mask) for t in trajectories),
        episodes=len(trajectories),
        search_ratio_free=_category_search_ratio(trajectories, "search_free"),
        search_ratio_required=_category_search_ratio(trajectories, "search_required"),
    )


def _category_search_ratio(trajectories: Sequence["Trajectory"], category: str) -> float | None:
    """Search ratio over the episodes whose question has ``category`` (the data's label); None if none has."""
    chosen = [t for t in trajectories if t.meta.get("category") == category]
    return _mean([float(t.searches > 0) for t in chosen]) if chosen else None


ADDED_LATER = ("search_ratio_free", "search_ratio_required")  # absent from files written before they were logged


def read_metrics(path: str | Path) -> list[StepMetrics]:
    """Read ``metrics.jsonl`` back as records, in file order (figures a file predates read as None)."""
    names = {f.name for f in fields(StepMetrics)}
    rows = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            rows.append(StepMetrics(**{**dict.fromkeys(ADDED_LATER), **{k: v for k, v in json.loads(line).items() if k in names}}))
    return rows


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop lines of steps after ``last_step`` (written by a run that died after its last checkpoint)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= last_step]
    path.write_text("".join(line + "\n" for line in keep))


class MetricsLog:
    """Append ``StepMetrics`` to ``metrics.jsonl`` (flushed and synced each step), and optionally elsewhere."""

    def __init__(self, out_dir: Path, *, tensorboard: bool = False, wandb: bool = False, wandb_project: str = "mmsearch-r1",
                 run_config: dict | None = None, resume: bool = False):
        self.path = out_dir / "metrics.jsonl"
        self._tb = _tensorboard_writer(out_dir / "tensorboard") if tensorboard else None
        self._wandb = _wandb_run(wandb_project, out_dir, run_config or {}, resume) if wandb else None

    def write(self, metrics: StepMetrics) -> None:
        row = {"step": metrics.step, **asdict(metrics)}
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        scalars = {k: v for k, v in row.items() if k != "step" and v is not None}
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(f"train/{key}", value, metrics.step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log({f"train/{k}": v for k, v in scalars.items()}, step=metrics.step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _tensorboard_writer(log_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("train.tensorboard is on but tensorboard is not installed; pip install tensorboard or set train.tensorboard=false.") from None
    return SummaryWriter(log_dir=str(log_dir))


def _wandb_run(project: str, out_dir: Path, run_config: dict, resume: bool):
    try:
        import wandb
    except ImportError:
        raise ConfigError("train.wandb is on but wandb is not installed; pip install wandb or set train.wandb=false.") from None
    # The run id is kept beside the metrics so that --resume continues the same W&B run.
    id_file = out_dir / "wandb_id.txt"
    run_id = id_file.read_text().strip() if resume and id_file.exists() else wandb.util.generate_id()
    id_file.write_text(run_id)
    return wandb.init(project=project, id=run_id, resume="allow", dir=str(out_dir), config=run_config)
