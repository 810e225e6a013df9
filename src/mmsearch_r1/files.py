"""Input files named on the command line or in a config: one clear error when a path is not the file it should be."""

from __future__ import annotations

from pathlib import Path

from mmsearch_r1.errors import DataError, MMSearchError


def existing_file(path: str | Path, what: str, fix: str, error: type[MMSearchError] = DataError) -> Path:
    """``path`` when it is a file; otherwise ``error`` saying it is a folder or missing, then ``fix``.

    >>> existing_file(".", "config file", "pass a TOML file.")
    Traceback (most recent call last):
    ...
    mmsearch_r1.errors.DataError: config file . is a folder, not a file; pass a TOML file.
    """
    path = Path(path)
    if path.is_dir():
        raise error(f"{what} {path} is a folder, not a file; {fix}")
    if not path.is_file():
        raise error(f"{what} {path} does not exist; {fix}")
    return path


def read_text(path: Path, what: str, fix: str, error: type[MMSearchError] = DataError) -> str:
    """The UTF-8 text of ``path``; ``error`` naming the file when it is not text (an image or a Parquet file)."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise not_text(path, what, fix, error) from None


def not_text(path: Path, what: str, fix: str, error: type[MMSearchError] = DataError) -> MMSearchError:
    """The error for a file read as UTF-8 text that is not."""
    return error(f"{what} {path} is not a UTF-8 text file; {fix}")


def file_in_the_way(path: str | Path | None) -> Path | None:
    """The file standing where a folder on ``path`` was to be made: ``path`` or the nearest parent that exists.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as f:
    ...     file_in_the_way(Path(f.name) / "sub" / "out") == Path(f.name)
    True
    """
    if path is None:
        return None
    for candidate in (Path(path), *Path(path).parents):
        if candidate.exists():
            return candidate if candidate.is_file() else None
    return None
