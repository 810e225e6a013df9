"""CLI commands of this part. Keep module-level imports to typer and the standard library."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mmsearch_r1.cli.common import ConfigOption, SetOption, load


def train(
    config: Optional[Path] = ConfigOption,
    set_: Optional[list[str]] = SetOption,
    resume: bool = typer.Option(False, "--resume", help="Continue the run in out_dir from its newest checkpoint, exactly."),
) -> None:
    """Train the policy with GRPO: roll out groups of episodes, score them, update, log, checkpoint.

    Metrics go to <out_dir>/metrics.jsonl (one JSON line per step), checkpoints to <out_dir>/checkpoints/,
    the final policy to <out_dir>/policy. Kill it at any time and continue with --resume.

    Example: mmsearch-r1 train --config configs/demo.toml --set train.steps=50
    """
    from mmsearch_r1.train.trainer import train as run_training

    cfg = load(config, set_)
    final = run_training(cfg, resume=resume)
    typer.echo(f"final policy: {final}\nmetrics: {Path(cfg.out_dir) / 'metrics.jsonl'}")


def register(app: typer.Typer) -> None:
    """Add this part's commands to the main app."""
    app.command("train")(train)
