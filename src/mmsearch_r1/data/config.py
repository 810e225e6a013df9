"""Config of the search-balancing data step."""

from __future__ import annotations

from pydantic import Field

from mmsearch_r1.config import Section


class BalanceConfig(Section):
    """Label questions search_free / search_required from the model's own success, then sample a balanced set."""

    candidates: int | None = Field(None, ge=1, description="Label at most this many questions, drawn at random from the data (None: all).")
    k: int = Field(4, ge=1, le=64, description="Episodes per question and workflow used to measure success.")
    temperature: float = Field(1.0, ge=0.0, le=5.0, description="Sampling temperature of those episodes.")
    free_threshold: float = Field(0.5, gt=0.0, le=1.0, description="Direct-answer success rate at or above which a question is search_free.")
    free_share: float = Field(1 / 3, ge=0.0, le=1.0, description="Share of search_free questions in the balanced set (published: about 1 free : 2 required).")
    size: int | None = Field(None, ge=1, description="Most questions in the balanced set; None keeps as many as the share allows.")
    keep_unsolved: bool = Field(False, description="Keep questions the model fails even with search (as search_required).")
    drop_search_paying: bool = Field(False, description=(
        "Also run the search episodes on the questions answered right without search, and drop those on which searching "
        "still earns more reward (success with search times 1 - reward.search_penalty above success without)."))

