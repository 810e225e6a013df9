"""CLI commands of this part. Keep module-level imports to typer and the standard library."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this part's commands to the main app."""
