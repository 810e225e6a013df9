"""``mmsearch-r1 data``: look inside VQA Parquet files."""

from __future__ import annotations

from pathlib import Path

import typer

data_app = typer.Typer(help="Inspect VQA data files in the veRL/FVQA Parquet layout.", no_args_is_help=True)


@data_app.command("inspect")
def inspect(
    file: Path = typer.Argument(..., help="A veRL/FVQA Parquet file."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    examples: int = typer.Option(3, "--examples", "-n", min=0, help="How many example rows to show."),
) -> None:
    """Print the row count, the columns, label counts, bad rows and a few examples."""
    import json
    from collections import Counter

    from mmsearch_r1.data.parquet import scan_parquet

    scan = scan_parquet(file)
    samples = scan.samples
    summary = {
        "file": str(file),
        "rows": len(samples) + len(scan.bad_rows),
        "good_rows": len(samples),
        "bad_rows": [{"row": i, "reason": r} for i, r in scan.bad_rows],
        "columns": scan.columns,
        "data_source": dict(Counter(s.data_source for s in samples)),
        "category": dict(Counter(s.category or "unlabelled" for s in samples)),
        "search_need": dict(Counter(s.search_need or "unlabelled" for s in samples)),
        "examples": [
            {"id": s.id, "question": s.question, "answers": s.answers[:5], "n_answers": len(s.answers),
             "image_size": list(s.image.size), "category": s.category, "search_need": s.search_need}
            for s in samples[:examples]
        ],
    }
    if json_output:
        typer.echo(json.dumps(summary, ensure_ascii=False, indent=2))
        return
    _print_summary(summary)


def _print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{summary['file']}[/]: {summary['rows']} rows ({len(summary['bad_rows'])} bad)")
    console.print("columns: " + ", ".join(summary["columns"]))
    for label in ("data_source", "category", "search_need"):
        console.print(f"{label}: " + ", ".join(f"{k} {v}" for k, v in sorted(summary[label].items())))
    for bad in summary["bad_rows"][:5]:
        console.print(f"[red]row {bad['row']}[/]: {bad['reason']}")
    table = Table("id", "question", "answers", "image", "label")
    for ex in summary["examples"]:
        answers = ", ".join(ex["answers"]) + (f" (+{ex['n_answers'] - len(ex['answers'])})" if ex["n_answers"] > len(ex["answers"]) else "")
        table.add_row(ex["id"], ex["question"], answers, "x".join(map(str, ex["image_size"])), ex["search_need"] or ex["category"] or "")
    if summary["examples"]:
        console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
