"""Config of evaluation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mmsearch_r1.config import Section


class EvalConfig(Section):
    """The evaluation workflows and their scoring."""

    match: Literal["em", "subem", "judge"] = Field("subem", description="Accuracy rule: exact match, substring match, or an LLM judge.")
