"""VQA samples and their Parquet files in the veRL / FVQA layout."""

from mmsearch_r1.data.schema import CATEGORIES, SEARCH_NEEDS, VQASample

__all__ = ["CATEGORIES", "SEARCH_NEEDS", "VQASample", "read_parquet", "write_parquet"]


def __getattr__(name: str):
    # read_parquet/write_parquet import pyarrow; keep `import mmsearch_r1.data` light.
    if name in ("read_parquet", "write_parquet"):
        from mmsearch_r1.data import parquet

        return getattr(parquet, name)
    raise AttributeError(name)
