"""Config of the demo world generator."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mmsearch_r1.config import Section


class WorldConfig(Section):
    """The procedurally generated demo world."""

    size: Literal["small", "default"] = Field("default", description="small: for tests (seconds); default: for the demo.")
