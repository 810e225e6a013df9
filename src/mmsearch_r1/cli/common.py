"""Options and helpers shared by every subcommand, and the ``config`` commands."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

ConfigOption = typer.Option(None, "--config", "-c", help="TOML config file; defaults are used for what it leaves out.")
SetOption = typer.Option(None, "--set", "-s", help="Dotted override, repeatable: --set train.lr=1e-5.")


def load(config: Optional[Path], overrides: Optional[list[str]]):
    """Load the config a subcommand was given (file + overrides)."""
    from mmsearch_r1.config import load_config

    return load_config(config, overrides or [])


config_app = typer.Typer(help="Show the configuration and what each key means.", no_args_is_help=True)


@config_app.command("show")
def show(config: Optional[Path] = ConfigOption, set_: Optional[list[str]] = SetOption) -> None:
    """Print the resolved configuration as TOML."""
    from mmsearch_r1.config import config_to_toml

    typer.echo(config_to_toml(load(config, set_)))


@config_app.command("docs")
def docs() -> None:
    """Print every config key with its type, bounds, default and meaning.

    In a terminal: a table. Piped (`mmsearch-r1 config docs | grep train.`): one tab-separated line a key,
    nothing cut.
    """
    import sys

    from mmsearch_r1.config import describe

    if not sys.stdout.isatty():
        for row in describe():
            typer.echo("\t".join(row))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("key", "type", "default", "meaning")
    for row in describe():
        table.add_row(*row)
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
