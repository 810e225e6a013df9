"""CLI commands of the search tools: build indexes, search them, serve the tools, read the cache's counts.

Module-level imports stay typer + standard library; each command imports what it needs when it runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from mmsearch_r1.cli.common import ConfigOption, SetOption, load

index_app = typer.Typer(help="Build local search indexes from your own pages or images.", no_args_is_help=True)
search_app = typer.Typer(help="Query a local index from the command line.", no_args_is_help=True)
cache_app = typer.Typer(help="Inspect the search cache.", no_args_is_help=True)

KOption = typer.Option(5, "--k", "-k", min=1, max=100, help="Number of results.")
JsonOption = typer.Option(False, "--json", help="Print a JSON list instead of a table.")


@index_app.command("text")
def index_text(
    corpus: Path = typer.Option(..., "--corpus", help="JSONL or Parquet file of pages, each with url, title and text."),
    out: Path = typer.Option(..., "--out", help="Folder to write the index to."),
    dense_model: Optional[Path] = typer.Option(None, "--dense-model", help="sentence-transformers model folder: also build a dense index (for retrieval dense or hybrid)."),
) -> None:
    """Index a corpus of pages for BM25 text search (and optionally dense retrieval)."""
    import time

    from mmsearch_r1.tools.local_text import build_text_index

    start = time.perf_counter()
    index = build_text_index(corpus, out, dense_model=dense_model, show_progress=True)
    pages = json.loads((index / "index.json").read_text())["pages"]
    typer.echo(f"indexed {pages} pages into {index} in {time.perf_counter() - start:.1f} s")


@index_app.command("image")
def index_image(
    images: Path = typer.Option(..., "--images", help="Image folder (titles/urls from an optional metadata.jsonl: file_name, title, url) or Parquet file (image, title, url)."),
    out: Path = typer.Option(..., "--out", help="Folder to write the index to."),
    clip_model: Optional[Path] = typer.Option(None, "--clip-model", help="CLIP or SigLIP model folder (transformers); default: the weight-free handcrafted embedder."),
    thumbnail_side: int = typer.Option(256, "--thumbnail-side", min=16, max=4096, help="Longest side of the stored thumbnails, in pixels."),
) -> None:
    """Embed an image collection and index it for image search."""
    import time

    from mmsearch_r1.tools.embedders import ClipEmbedder
    from mmsearch_r1.tools.local_image import build_image_index, read_image_items

    start = time.perf_counter()
    embedder = ClipEmbedder(clip_model) if clip_model else None
    index = build_image_index(read_image_items(images), out, embedder, max_thumbnail_side=thumbnail_side, show_progress=True)
    count = json.loads((index / "index.json").read_text())["items"]
    typer.echo(f"indexed {count} images into {index} in {time.perf_counter() - start:.1f} s")


def _print_hits(rows: list[dict], as_json: bool, columns: tuple[str, ...]) -> None:
    if as_json:
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    if not rows:
        typer.echo("no results")
        return
    table = Table("#", *columns)
    for i, row in enumerate(rows, 1):
        table.add_row(str(i), *(f"{row[c]:.3f}" if c == "score" else str(row[c]) for c in columns))
    Console().print(table)


@search_app.command("text")
def search_text(
    query: str = typer.Argument(..., help="The text query."),
    index: Path = typer.Option(..., "--index", help="Text index folder (`mmsearch-r1 index text`)."),
    k: int = KOption,
    as_json: bool = JsonOption,
    retrieval: str = typer.Option("bm25", "--retrieval", help="bm25, dense or hybrid (dense and hybrid need an index built with --dense-model)."),
    summary_chars: int = typer.Option(300, "--summary-chars", min=40, max=4000, help="Longest summary, in characters."),
) -> None:
    """Search a local text index; each hit has a title, url, query-focused summary and BM25 score."""
    from mmsearch_r1.errors import ConfigError
    from mmsearch_r1.tools.local_text import LocalTextSearch

    if retrieval not in ("bm25", "dense", "hybrid"):
        raise ConfigError(f"--retrieval {retrieval} is not one of bm25, dense, hybrid.")
    hits = LocalTextSearch(index, retrieval=retrieval, summary_chars=summary_chars).search(query, k)  # type: ignore[arg-type]
    rows = [{"title": h.title, "url": h.url, "summary": h.summary, "score": h.score} for h in hits]
    _print_hits(rows, as_json, ("title", "url", "summary", "score"))


@search_app.command("image")
def search_image(
    image: Path = typer.Argument(..., help="The query image file."),
    index: Path = typer.Option(..., "--index", help="Image index folder (`mmsearch-r1 index image`)."),
    k: int = KOption,
    as_json: bool = JsonOption,
) -> None:
    """Search a local image index with an image; each hit has a title, url and similarity score."""
    from mmsearch_r1.files import existing_file
    from mmsearch_r1.tools.local_image import LocalImageSearch, decode_image

    existing_file(image, "image file", "pass a PNG or JPEG file.")
    hits = LocalImageSearch(index).search(decode_image(image.read_bytes(), str(image)), k)
    rows = [{"title": h.title, "url": h.url, "score": h.score} for h in hits]
    _print_hits(rows, as_json, ("title", "url", "score"))


def serve(
    config: Optional[Path] = ConfigOption,
    set_: Optional[list[str]] = SetOption,
    host: Optional[str] = typer.Option(None, "--host", help="Address to listen on (default: tools.service.host)."),
    port: Optional[int] = typer.Option(None, "--port", help="Port (default: tools.service.port)."),
) -> None:
    """Serve the configured image and text search (and their cache) over HTTP for many rollout workers.

    Clients send `Authorization: Bearer $MMSEARCH_SERVICE_TOKEN` (the variable is tools.service.token_env)
    and use tools.image.type=remote / tools.text.type=remote with tools.remote.url.
    """
    import uvicorn

    from mmsearch_r1.tools import build_toolbox, open_cache
    from mmsearch_r1.tools.service import create_app
    from mmsearch_r1.tools.webclient import secret_from_env

    cfg = load(config, set_)
    tools = cfg.tools
    token = secret_from_env(tools.service.token_env, "search service token")
    toolbox = build_toolbox(tools, cache_dir=cfg.out_dir / "tool_cache", image=tools.image.index_dir is not None or tools.image.type != "local", text=tools.text.index_dir is not None or tools.text.type != "local")
    cache = open_cache(tools, cfg.out_dir / "tool_cache")
    app = create_app(toolbox, token=token, max_body_bytes=tools.service.max_body_bytes, max_k=tools.service.max_k, cache=cache, public_image_dir=tools.image.public_image_dir)
    bind_host, bind_port = host or tools.service.host, port if port is not None else tools.service.port
    typer.echo(f"serving image search: {toolbox.image is not None}, text search: {toolbox.text is not None} on http://{bind_host}:{bind_port}")
    uvicorn.run(app, host=bind_host, port=bind_port, log_level="info")


@cache_app.command("stats")
def cache_stats(
    dir: Optional[Path] = typer.Option(None, "--dir", help="Cache folder (default: tools.cache.dir, else the user's cache folder)."),
    config: Optional[Path] = ConfigOption,
    set_: Optional[list[str]] = SetOption,
) -> None:
    """Print the cache's entries, hits, misses, live calls, failures and estimated cost as JSON."""
    from mmsearch_r1.errors import ConfigError
    from mmsearch_r1.tools import default_cache_dir
    from mmsearch_r1.tools.cache import SearchCache

    folder = dir or load(config, set_).tools.cache.dir or default_cache_dir()
    if not Path(folder).is_dir():
        raise ConfigError(f"there is no cache at {folder}; pass --dir with a cache folder.")
    typer.echo(json.dumps(SearchCache(folder).stats().as_dict(), indent=2))


def register(app: typer.Typer) -> None:
    """Add this part's commands to the main app."""
    app.add_typer(index_app, name="index")
    app.add_typer(search_app, name="search")
    app.add_typer(cache_app, name="cache")
    app.command("serve")(serve)
