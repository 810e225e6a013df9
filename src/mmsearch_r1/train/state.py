"""What a training run must keep to continue exactly: data position, RNG states, checkpoints on disk.

A checkpoint is a folder ``<out_dir>/checkpoints/step_NNNNNN/`` holding

- ``policy/``: the policy in Hugging Face layout (``Policy.save``; loads with ``load_policy``),
- ``trainer_state.pt``: step, optimizer, scheduler, prompt-sampler position and every RNG state,
- ``config.toml``: the resolved config of the run.

It is written to a temporary folder and renamed into place, so a run killed while saving leaves the previous
checkpoint intact; only the newest ``keep`` checkpoints stay.
"""

from __future__ import annotations

import random
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from mmsearch_r1.models import Policy

CHECKPOINT_PREFIX = "step_"


class PromptSampler:
    """Endless seeded prompt order: each epoch is a fresh permutation of ``range(size)``.

    The position is two integers (epoch, offset), so a resumed run draws exactly the prompts the killed run
    would have drawn.

    >>> s = PromptSampler(5, seed=1)
    >>> first = s.take(3); s2 = PromptSampler(5, seed=1); s2.load_state_dict(s.state_dict())
    >>> s.take(4) == s2.take(4)
    True
    """

    def __init__(self, size: int, seed: int):
        if size < 1:
            raise ValueError("PromptSampler needs at least one prompt.")
        self.size, self.seed = size, seed
        self.epoch, self.offset = 0, 0

    def _order(self, epoch: int) -> list[int]:
        return np.random.default_rng([self.seed, epoch]).permutation(self.size).tolist()

    def take(self, k: int) -> list[int]:
        """The next ``k`` prompt indices, crossing into the next epoch's permutation when one runs out."""
        out: list[int] = []
        while len(out) < k:
            order = self._order(self.epoch)
            grab = order[self.offset: self.offset + k - len(out)]
            out.extend(grab)
            self.offset += len(grab)
            if self.offset >= self.size:
                self.epoch, self.offset = self.epoch + 1, 0
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset, "size": self.size, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])


def rng_state() -> dict:
    """Every global RNG a step may touch: Python, NumPy, torch CPU and (if present) CUDA."""
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class TrainerState:
    """The non-model part of a checkpoint (``step`` counts finished steps)."""

    step: int
    optimizer: dict
    scheduler: dict
    sampler: dict
    rng: dict


def checkpoint_dir(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / "checkpoints" / f"{CHECKPOINT_PREFIX}{step:06d}"


def list_checkpoints(out_dir: Path) -> list[Path]:
    """Finished checkpoints of a run, oldest first."""
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX) and p.name[len(CHECKPOINT_PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def latest_checkpoint(out_dir: Path) -> Path | None:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def save_checkpoint(out_dir: Path, policy: "Policy", state: TrainerState, config_toml: str, keep: int) -> Path:
    """Write one checkpoint atomically and prune to the newest ``keep``; return its folder."""
    import torch

    final = checkpoint_dir(out_dir, state.step)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with quiet_transformers():
        policy.save(tmp / "policy")
    torch.save(state.__dict__, tmp / "trainer_state.pt")
    (tmp / "config.toml").write_text(config_toml)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in list_checkpoints(out_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_trainer_state(checkpoint: Path) -> TrainerState:
    import torch

    data: dict[str, Any] = torch.load(Path(checkpoint) / "trainer_state.pt", weights_only=False, map_location="cpu")
    return TrainerState(**data)


@contextmanager
def quiet_transformers():
    """Hide transformers' own progress bars (shard writing, weight loading) under the trainer's live bar."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
