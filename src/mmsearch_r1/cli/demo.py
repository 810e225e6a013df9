"""``mmsearch-r1 demo`` and ``mmsearch-r1 balance``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mmsearch_r1.cli.common import ConfigOption, SetOption


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", "-o", help="Folder for every stage's outputs; a second run reuses the finished stages whose settings did not change, resumes an interrupted one and redoes the rest."),
    size: str = typer.Option("default", "--size", help="default: the full demo (10-17 minutes on 2 CPU cores, depending on the host); small: a quick check with a 3-layer model and 10 GRPO steps (about 4 minutes, most of it the pretraining; the full demo then pretrains its own 4-layer model)."),
    ablations: bool = typer.Option(False, "--ablations", help="Also run GRPO without the search penalty, GRPO on search-required data only, and SFT on oracle trajectories."),
    device: Optional[str] = typer.Option(None, "--device", help="Run every model stage (pretraining, GRPO, SFT, rollouts) on this device: cpu or cuda[:i]; the same as --set pretrain.device=D --set train.device=D --set engine.device=D. Default: the config's (cpu)."),
    config: Optional[Path] = ConfigOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """World -> pretraining -> search balancing -> GRPO -> evaluation: a tiny model learns when to search.

    Writes OUT/results.json and OUT/results.md (accuracy and search ratios of direct, RAG, the pretrained
    model, the oracle and the trained on-demand model, on in-domain and held-out tests), plots and trajectory
    viewers. Without --config it uses the packaged demo configuration for the chosen size.
    """
    from mmsearch_r1.config import load_config
    from mmsearch_r1.demo import demo_config_path, run_demo
    from mmsearch_r1.errors import ConfigError
    from mmsearch_r1.models.policy import require_device

    if size not in ("default", "small"):
        raise ConfigError(f"--size must be default or small, not {size!r}.")
    if device is not None:
        require_device(device, "--device")
    devices = [f"{section}.device={device}" for section in ("pretrain", "train", "engine")] if device else []
    cfg = load_config(config or demo_config_path(size), devices + (set_ or []))
    results = run_demo(cfg, out, ablations=ablations)
    typer.echo(f"results: {results} (table: {results.with_suffix('.md')})")


def balance(
    model: Path = typer.Option(..., "--model", "-m", help="Policy folder (the pretrained model)."),
    data: Path = typer.Option(..., "--data", "-d", help="Candidate questions (veRL/FVQA Parquet)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: train.parquet (balanced), labelled.parquet, balance.json."),
    world: Optional[Path] = typer.Option(None, "--world", "-w", help="Demo world folder whose indexes serve as the search tools (else tools.* in the config)."),
    config: Optional[Path] = ConfigOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Label each question search_free or search_required from the model's own success, and sample a balanced set.

    The model answers every question balance.k times without search and (where that fails) with search. A
    question it answers right without search often enough (balance.free_threshold) is search_free; one only
    search gets right is search_required. With balance.drop_search_paying=true every question gets its search
    episodes, and a free one on which searching still earns more reward under reward.search_penalty is
    dropped. The balanced set mixes the labels at balance.free_share (default 1 free : 2 required).
    """
    from mmsearch_r1.cli.common import load
    from mmsearch_r1.config import save_config
    from mmsearch_r1.demo import run_balance, world_toolbox
    from mmsearch_r1.tools import build_toolbox

    cfg = load(config, set_)
    toolbox = world_toolbox(world, cfg) if world else build_toolbox(cfg.tools)
    run_balance(data, model, out, cfg, toolbox)
    save_config(cfg, out)
    typer.echo((out / "balance.json").read_text().rstrip("\n"))


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
    app.command("balance")(balance)
