"""The ``mmsearch-r1`` command. Thin and fast: each subcommand imports what it needs when it runs."""

from __future__ import annotations

import sys

import typer

from mmsearch_r1.errors import MMSearchError

app = typer.Typer(
    name="mmsearch-r1",
    help="Train multimodal models to search only when they need to (MMSearch-R1).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


def _register() -> None:
    from mmsearch_r1.cli import common, data, demo, evaluate, rollout, tools, train, world

    for module in (demo, world, data, tools, rollout, train, evaluate, common):
        module.register(app)


_register()


def main() -> None:
    """Run the CLI; project errors print as one line, without a traceback.

    CPU kernels are pinned first, before any command imports torch (``mmsearch_r1.cpu_kernels``).
    """
    from mmsearch_r1.cpu_kernels import pin_cpu_kernels

    pin_cpu_kernels()
    try:
        app(standalone_mode=False)
    except MMSearchError as error:
        typer.secho(f"error: {error}", fg="red", err=True)
        sys.exit(2)
    except (FileExistsError, NotADirectoryError) as error:  # an output folder asked for where a file is
        from mmsearch_r1.files import file_in_the_way

        blocking = file_in_the_way(error.filename)
        if blocking is None:
            raise
        typer.secho(f"error: {blocking} is a file, and a folder is needed there; pass a folder path (new or existing).", fg="red", err=True)
        sys.exit(2)
    except (typer.Exit, SystemExit) as done:
        sys.exit(getattr(done, "exit_code", getattr(done, "code", 0)))
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as error:
        if isinstance(error, _usage_errors()) and hasattr(error, "show"):
            error.show()
            sys.exit(error.exit_code)
        raise


def _usage_errors() -> tuple[type[Exception], ...]:
    """Unknown commands and bad options: click's own, and those of the copy of click that newer typer carries."""
    import click

    return (click.ClickException, typer.TyperException) if hasattr(typer, "TyperException") else (click.ClickException,)
