"""The outcome reward: accuracy times a search penalty, plus a format term. Pure functions, no model.

``reward = (1 - α) · accuracy · penalty + α · format`` with α = ``format_weight`` (0.1) and search penalty
p = 0.1 by default.

- accuracy: the text of the last ``<answer>…</answer>`` of the last turn, normalized (lower-case, no
  punctuation, no articles a/an/the, single spaces), equals a normalized gold answer (``em``) or contains one
  (``subem``). The refusal sentence scores 0.
- penalty: ``1 - p`` when the answer is correct and the trajectory searched, else 1; with
  ``per_search_penalty`` it is ``(1 - p) ** n`` for n searches. ``penalty_schedule`` ramps p in over a warm-up.
- search count: the turns other than the last that hold an image-search tag or a text-search tag pair; a
  one-turn trajectory counts its own turn.
- format: 1 when every turn has a well-formed shape (see ``protocol.turn_shape``) and the sequence of shapes
  is answer, image → answer, text → answer, or image → text → answer; else 0.

Departures from the published code: none in the formula. The refusal rule is ours: a model told to write a
fixed sentence when it cannot answer must not earn substring credit for it.

>>> r = score(["<reason>I know it.</reason><answer>The Eiffel Tower</answer>"], ["Eiffel Tower"])
>>> (r.reward, r.accuracy, r.format, r.search_count)
(1.0, 1.0, 1.0, 0)
>>> r = score(["<reason>?</reason><search><img></search>", "<reason>ok</reason><answer>Paris</answer>"], ["paris"])
>>> round(r.reward, 4)
0.91
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from mmsearch_r1.errors import RewardError
from mmsearch_r1.protocol.actions import ALLOWED_SEQUENCES, REFUSAL, holds_search, last_answer, turn_shape


_ARTICLES = re.compile(r"\b(a|an|the)\b")


@dataclass(frozen=True)
class RewardBreakdown:
    reward: float
    accuracy: float
    format: float
    search_count: int
    penalty: float = 1.0
    answer: str | None = None


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation (any Unicode punctuation), drop a/an/the, collapse whitespace.

    >>> normalize_answer("  The  Eiffel-Tower! ")
    'eiffeltower'
    >>> normalize_answer("An apple a day")
    'apple day'
    """
    text = text.lower()
    text = "".join(ch for ch in text if not unicodedata.category(ch).startswith("P"))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def is_correct(prediction: str | None, answers: list[str], match: str = "em") -> bool:
    """Whether the prediction matches any gold answer under ``em`` or ``subem``; the refusal never does."""
    if match not in ("em", "subem"):
        raise RewardError(f"match must be 'em' or 'subem', not {match!r}.")
    if prediction is None:
        return False
    pred = normalize_answer(prediction)
    if not pred or pred == normalize_answer(REFUSAL):
        return False
    golds = [g for g in (normalize_answer(a) for a in answers) if g]
    if match == "em":
        return pred in golds
    return any(g in pred for g in golds)


def search_count(turns: list[str]) -> int:
    """Turns other than the last holding a search tag; a one-turn trajectory counts its own turn."""
    counted = turns if len(turns) == 1 else turns[:-1]
    return sum(holds_search(t) for t in counted)


def format_score(turns: list[str]) -> float:
    """1.0 when every turn is well formed and the sequence is an allowed one, else 0.0."""
    shapes = tuple(turn_shape(t) for t in turns)
    return 1.0 if None not in shapes and shapes in ALLOWED_SEQUENCES else 0.0


def search_penalty_factor(correct: bool, searches: int, search_penalty: float, per_search_penalty: bool = False) -> float:
    """The multiplier on a correct answer's accuracy: ``1 - p`` (or ``(1 - p) ** n``) if it searched, else 1."""
    if not correct or searches == 0:
        return 1.0
    return (1.0 - search_penalty) ** searches if per_search_penalty else 1.0 - search_penalty


def penalty_schedule(step: int, search_penalty: float, warmup_steps: int = 0) -> float:
    """The search penalty in force at ``step`` (0-based): ramped linearly from 0 over ``warmup_steps``.

    >>> [penalty_schedule(s, 0.1, 4) for s in (0, 2, 4, 9)]
    [0.0, 0.05, 0.1, 0.1]
    """
    if warmup_steps <= 0 or step >= warmup_steps:
        return search_penalty
    return search_penalty * step / warmup_steps


def score(
    turns: list[str],
    answers: list[str],
    *,
    format_weight: float = 0.1,
    search_penalty: float = 0.1,
    match: str = "em",
    per_search_penalty: bool = False,
) -> RewardBreakdown:
    """Score one trajectory: ``turns`` are the assistant turns' texts in order, ``answers`` the gold answer and aliases."""
    if not turns:
        raise RewardError("cannot score a trajectory with no assistant turn.")
    if not answers or not any(normalize_answer(a) for a in answers):
        raise RewardError("cannot score a trajectory without a non-empty gold answer.")
    if not (0.0 <= format_weight <= 1.0 and 0.0 <= search_penalty <= 1.0):
        raise RewardError("format_weight and search_penalty must lie in [0, 1].")
    prediction = last_answer(turns[-1])
    correct = is_correct(prediction, answers, match)
    searches = search_count(turns)
    penalty = search_penalty_factor(correct, searches, search_penalty, per_search_penalty)
    accuracy = 1.0 if correct else 0.0
    fmt = format_score(turns)
    reward = (1.0 - format_weight) * accuracy * penalty + format_weight * fmt
    return RewardBreakdown(reward=reward, accuracy=accuracy, format=fmt, search_count=searches, penalty=penalty, answer=prediction)
