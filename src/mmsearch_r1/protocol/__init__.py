"""The search protocol: the action grammar, its limits, prompts and feedback turns. Pure functions."""

from mmsearch_r1.protocol.actions import (
    ALLOWED_SEQUENCES,
    IMAGE_SEARCH_CALL,
    REFUSAL,
    Action,
    Answer,
    ImageSearchCall,
    Invalid,
    SearchBudget,
    TextSearchCall,
    decide,
    holds_search,
    last_answer,
    parse_turn,
    turn_shape,
)
from mmsearch_r1.protocol.feedback import (
    WORKFLOWS,
    Templates,
    Workflow,
    escape,
    first_turn,
    image_results_turn,
    text_results_turn,
    tool_error_turn,
    workflow_name,
)

__all__ = [
    "ALLOWED_SEQUENCES", "IMAGE_SEARCH_CALL", "REFUSAL", "Action", "Answer", "ImageSearchCall", "Invalid", "SearchBudget",
    "TextSearchCall", "Templates", "WORKFLOWS", "Workflow", "decide", "escape", "first_turn", "holds_search", "image_results_turn",
    "last_answer", "parse_turn", "text_results_turn", "tool_error_turn", "turn_shape", "workflow_name",
]
