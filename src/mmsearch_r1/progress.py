"""One progress bar for every long job (rollout, evaluation, training, index and world builds)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator


@contextmanager
def progress_bar(description: str, total: int | None = None, *, enabled: bool = True, completed: int = 0,
                 transient: bool = False) -> Iterator[Callable[..., None]]:
    """Yield ``advance(n=1, **fields)``, which moves a rich progress bar on by ``n`` items.

    ``fields`` may set ``description`` or ``status`` (text shown after the bar). With ``enabled`` False the
    bar is not drawn and ``advance`` does nothing, so callers need no branch of their own.
    """
    if not enabled:
        yield lambda n=1, **fields: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[status]}")]
    with Progress(*columns, transient=transient) as bar:
        task = bar.add_task(description, total=total, completed=completed, status="")
        yield lambda n=1, **fields: bar.update(task, advance=n, **fields)
