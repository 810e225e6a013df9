"""CLI commands of this part. Keep module-level imports to typer and the standard library."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from mmsearch_r1.cli.common import ConfigOption, SetOption, load

world_app = typer.Typer(help="Build and check the demo world (guilds, emblems, facts, pages, questions, indexes).", no_args_is_help=True)


@world_app.command("build")
def build(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the world into (created if missing; an earlier world there is replaced)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of every random choice; the same seed gives byte-identical files. Default: the config's seed."),
    size: Optional[str] = typer.Option(None, "--size", help="small (20 entities: the demo's world and the tests') or default (48 entities: what the default pretraining teaches the tiny model in 5-6 minutes; docs/model.md). Default: world.size of the config."),
    config: Optional[Path] = ConfigOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Generate a demo world: train/test/heldout Parquet files, pages.jsonl, thumbnails, world.json and local indexes."""
    from mmsearch_r1.world.build import build_world
    from mmsearch_r1.world.schema import load_world

    cfg = load(config, set_)
    started = time.perf_counter()
    folder = build_world(out, seed=cfg.seed if seed is None else seed, size=size, cfg=cfg.world, progress=True)
    world = load_world(folder)
    groups = ", ".join(f"{g} {len(world.in_group(g))}" for g in sorted({e.group for e in world.entities}))
    typer.echo(f"built a {world.size} world in {folder} ({len(world.entities)} entities: {groups}) in {time.perf_counter() - started:.1f} s")


@world_app.command("check")
def check(
    world_dir: Path = typer.Argument(..., help="A world folder made by `mmsearch-r1 world build`."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Use only the first N questions of each test split for image search."),
) -> None:
    """Measure the world's search: image recall@1/@5 on test and held-out images, and text-search fact-first rate."""
    from mmsearch_r1.world.checks import image_recall, text_fact_rate

    image = image_recall(world_dir, limit=limit)
    text = text_fact_rate(world_dir)
    typer.echo(f"image search on {image.questions} question images: recall@1 {image.recall_at_1:.1%}, recall@{image.k} {image.recall_at_k:.1%}")
    typer.echo(f"text search on {text.queries} '<name> <attribute>' queries: fact sentence first {text.fact_first:.1%}, answer in top-1 summary {text.answer_in_top1:.1%}")


@world_app.command("show")
def show(
    world_dir: Path = typer.Argument(..., help="A world folder made by `mmsearch-r1 world build`."),
    sheet: Optional[Path] = typer.Option(None, "--sheet", help="Also save a PNG contact sheet: one rendering of every entity with its name and group."),
) -> None:
    """Print every entity of a world: name, knowledge group, search need and facts."""
    from rich.console import Console
    from rich.table import Table

    from mmsearch_r1.world.schema import load_world

    world = load_world(world_dir)
    table = Table("entity", "group", "search need", "emblem", "facts", title=f"{world.size} world, seed {world.seed}")
    for e in world.entities:
        sig = e.signature
        facts = ", ".join(f"{f.attribute}={f.answer}" for f in e.facts)
        table.add_row(e.name, e.group, e.search_need, f"{sig.shape}/{sig.pattern}/{sig.mark}", facts)
    Console().print(table)
    if sheet is not None:
        from mmsearch_r1.world.render import contact_sheet

        contact_sheet(world).save(sheet)
        typer.echo(f"contact sheet written to {sheet}")


def pretrain(
    world: Path = typer.Option(..., "--world", "-w", help="A world folder made by `mmsearch-r1 world build`."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the pretrained policy (Hugging Face layout), its report and checkpoint."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the model init, demonstrations and batches. Default: the config's seed."),
    report: bool = typer.Option(True, "--report/--no-report", help="Evaluate the pretrained model and write pretrain_report.json/.md."),
    config: Optional[Path] = ConfigOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Pretrain the tiny policy on a world: partial knowledge by group, and the protocol from scripted demonstrations.

    Model sizes come from the `model` config section and training from `pretrain` (see `mmsearch-r1 config docs`).
    Running it again with the same --out resumes from the last checkpoint. The result loads with `load_policy(OUT)`.
    On the default world (48 entities) the defaults take 5-6 minutes on 2 CPU cores, and met all four of the
    report's checks on 9 of the 11 seeds tried: read the report's checks, and try another --seed where one fails
    (docs/model.md).
    On a small world the unset schedule fields (epochs, protocol_demos, reading_drills, copy_drills,
    copy_drills_later, slips) take the small world's schedule: 75-96 s with the build, and a model that knows its
    groups but does not read the results (on 4 seeds of 5); --set pretrain.schedule=default gives the default
    world's, which met all four checks there on the one seed tried (about 4 minutes).
    """
    from mmsearch_r1.models.pretrain import pretrain as run_pretrain

    cfg = load(config, set_)
    if seed is not None:
        cfg.seed = seed
    started = time.perf_counter()
    folder = run_pretrain(cfg, world, out, progress=True, report=report)
    typer.echo(f"pretrained policy in {folder} ({time.perf_counter() - started:.1f} s)")
    if report and cfg.pretrain.report_samples:  # report_samples=0 skips the report, as --no-report does
        typer.echo((folder / "pretrain_report.md").read_text())


def register(app: typer.Typer) -> None:
    """Add this part's commands to the main app."""
    app.add_typer(world_app, name="world")
    app.command("pretrain")(pretrain)
