"""Parsing assistant turns into actions, the strict turn shapes the format reward checks, and the limits.

The model writes plain-text tags (none are special tokens):

- ``<reason>…</reason>``: reasoning, required before every action;
- ``<search><img></search>``: image search on the question's image, the last thing in the turn;
- ``<text_search>query</text_search>``: text search for ``query``, the last thing in the turn;
- ``<answer>…</answer>``: the final answer, which ends the episode.

``parse_turn`` is lenient (it finds what the model asked for); ``turn_shape`` is strict (it says whether the
turn is well formed) and is what the format reward uses. Both are pure functions of the text.

>>> parse_turn("<reason>I know this dog.</reason><answer>Rex</answer>")
Answer(text='Rex')
>>> parse_turn("<reason>Unknown place.</reason><search><img></search>")
ImageSearchCall()
>>> parse_turn("<reason>Look it up.</reason><text_search>Zorblat tower height</text_search>")
TextSearchCall(query='Zorblat tower height')
>>> parse_turn("I am not sure.")
Invalid(reason='the turn holds no answer and ends in no search call')
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Union

IMAGE_SEARCH_CALL = "<search><img></search>"
REFUSAL = "I cannot answer this question."  # the sentence the prompt asks for when the model cannot answer
PROTOCOL_TAGS = ("reason", "answer", "search", "img", "text_search", "information")

_IMAGE_SEARCH_AT_END = re.compile(r"<search>\s*<img>\s*</search>\s*\Z")
_TEXT_SEARCH_AT_END = re.compile(r"<text_search>((?:(?!<text_search>).)*?)</text_search>\s*\Z", re.S)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)
IMAGE_SEARCH_TAG = re.compile(r"<search>\s*<img>\s*</search>")
TEXT_SEARCH_TAG = re.compile(r"<text_search>.*?</text_search>", re.S)


@dataclass(frozen=True)
class Answer:
    text: str
    kind = "answer"


@dataclass(frozen=True)
class ImageSearchCall:
    kind = "image_search"


@dataclass(frozen=True)
class TextSearchCall:
    query: str
    kind = "text_search"


@dataclass(frozen=True)
class Invalid:
    reason: str
    kind = "invalid"


Action = Union[Answer, ImageSearchCall, TextSearchCall, Invalid]
ActionKind = Literal["answer", "image_search", "text_search", "invalid"]


def parse_turn(text: str) -> Action:
    """Read what an assistant turn asks for: a search that ends the turn wins, then the last answer."""
    if _IMAGE_SEARCH_AT_END.search(text):
        return ImageSearchCall()
    text_search = _TEXT_SEARCH_AT_END.search(text)
    if text_search:
        query = " ".join(text_search.group(1).split())
        return TextSearchCall(query) if query else Invalid("the text-search query is empty")
    answers = _ANSWER.findall(text)
    if answers:
        return Answer(answers[-1].strip())
    return Invalid("the turn holds no answer and ends in no search call")


def last_answer(text: str) -> str | None:
    """The text of the last ``<answer>…</answer>`` in ``text``, stripped; None if there is none."""
    answers = _ANSWER.findall(text)
    return answers[-1].strip() if answers else None


def holds_search(text: str) -> bool:
    """Whether the text holds an image-search tag or a text-search tag pair anywhere."""
    return bool(IMAGE_SEARCH_TAG.search(text) or TEXT_SEARCH_TAG.search(text))


def _count(text: str, tag: str) -> tuple[int, int]:
    return text.count(f"<{tag}>"), text.count(f"</{tag}>")


def turn_shape(text: str) -> ActionKind | None:
    """The strict shape of a turn for the format reward, or None when it is malformed.

    A well-formed turn, whitespace-stripped, opens with one ``<reason>…</reason>`` and ends with exactly one
    action: ``<answer>…</answer>``, ``<search><img></search>`` or ``<text_search>query</text_search>``; no
    other protocol tag appears anywhere in it.

    >>> turn_shape(" <reason>r</reason> so: <answer>x</answer> ")
    'answer'
    >>> turn_shape("<reason>r</reason><answer>x</answer><search><img></search>") is None
    True
    """
    t = text.strip()
    if not t.startswith("<reason>") or _count(t, "reason") != (1, 1) or t.count("<information>") or t.count("</information>"):
        return None
    after = t[t.index("</reason>") + len("</reason>"):]
    answer, search, img, text_search = (_count(t, tag) for tag in ("answer", "search", "img", "text_search"))
    none = (0, 0)
    if t.endswith("</answer>") and answer == (1, 1) and search == img == text_search == none and "<answer>" in after:
        return "answer"
    if t.endswith(IMAGE_SEARCH_CALL) and search == (1, 1) and img == (1, 0) and answer == text_search == none and IMAGE_SEARCH_CALL in after:
        return "image_search"
    if t.endswith("</text_search>") and text_search == (1, 1) and answer == search == img == none and "<text_search>" in after:
        query = after[after.index("<text_search>") + len("<text_search>"): -len("</text_search>")]
        return "text_search" if query.strip() else None
    return None


ALLOWED_SEQUENCES: frozenset[tuple[str, ...]] = frozenset(
    {("answer",), ("image_search", "answer"), ("text_search", "answer"), ("image_search", "text_search", "answer")}
)


# --- limits ------------------------------------------------------------------------------------------


@dataclass
class SearchBudget:
    """What an episode has used so far; ``turns`` counts assistant turns including the current one."""

    turns: int = 0
    image_searches: int = 0
    text_searches: int = 0


EndReason = Literal["answer", "invalid", "limit"]


def decide(action: Action, used: SearchBudget, *, max_turns: int, max_image_searches: int, max_text_searches: int) -> EndReason | None:
    """Whether the episode ends after ``action`` (and why), or None when its search should run.

    A search asked beyond its limit, or in the last allowed turn, ends the episode without feedback; so does a
    turn that is neither a valid search nor an answer.

    >>> decide(ImageSearchCall(), SearchBudget(turns=1), max_turns=3, max_image_searches=1, max_text_searches=2) is None
    True
    >>> decide(ImageSearchCall(), SearchBudget(turns=2, image_searches=1), max_turns=3, max_image_searches=1, max_text_searches=2)
    'limit'
    >>> decide(TextSearchCall("q"), SearchBudget(turns=3), max_turns=3, max_image_searches=1, max_text_searches=2)
    'limit'
    """
    if isinstance(action, Answer):
        return "answer"
    if isinstance(action, Invalid):
        return "invalid"
    if used.turns >= max_turns:
        return "limit"
    if isinstance(action, ImageSearchCall) and used.image_searches >= max_image_searches:
        return "limit"
    if isinstance(action, TextSearchCall) and used.text_searches >= max_text_searches:
        return "limit"
    return None
