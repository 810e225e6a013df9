"""Extractive, query-focused summaries: the sentences of a page that say most about the query.

The local text search and the web backends (as their fallback when no LLM summarizer answers) use the same
function, so a summary is the same wherever it is made. It is deterministic: same page and query, same text.

>>> page = "Quenta is a city. The capital of Zorblax is Quenta. Zorblax exports tin. Tin is grey."
>>> extractive_summary(page, "What is the capital of Zorblax?", max_chars=40)
'The capital of Zorblax is Quenta.'
"""

from __future__ import annotations

import math
import re
from collections import Counter

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"\w+", re.UNICODE)
# A short English stop list: question words and function words carry no topic of their own.
STOPWORDS = frozenset(
    "a an and are as at be been but by can could did do does for from had has have how i if in into is it its of on "
    "or s that the their there these this to was were what when where which who whom whose why will with would you "
    "your".split()
)


def terms(text: str) -> list[str]:
    """Lower-cased word tokens of ``text`` without stop words.

    >>> terms("What is the capital of Zorblax?")
    ['capital', 'zorblax']
    """
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


def split_sentences(text: str) -> list[str]:
    """Split on sentence-ending punctuation followed by space, and on line breaks; drop empty pieces."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def sentence_scores(sentences: list[str], query: str) -> list[float]:
    """Score each sentence by the query terms it holds, each weighted by its rarity among the page's sentences.

    weight(t) = log(1 + n / df(t)) for n sentences, df(t) the sentences holding t: a term in every sentence
    (often the page's own subject) counts less than the one that picks out the fact asked for.
    """
    wanted = set(terms(query))
    bags = [set(terms(s)) & wanted for s in sentences]
    df = Counter(t for bag in bags for t in bag)
    n = len(sentences)
    return [sum(math.log(1.0 + n / df[t]) for t in bag) for bag in bags]


def _clip(sentence: str, max_chars: int) -> str:
    if len(sentence) <= max_chars:
        return sentence
    cut = sentence[: max(1, max_chars - 1)].rsplit(" ", 1)[0]
    return cut + "…"


def extractive_summary(text: str, query: str, max_chars: int = 300) -> str:
    """The query's best sentences of ``text``, in page order, at most ``max_chars`` characters in all.

    Sentences are taken best score first (earlier sentence on ties) while they fit; when no sentence holds a
    query term, the page's opening sentences are used. A first sentence longer than the bound is clipped.
    """
    sentences = split_sentences(text)
    if not sentences:
        return ""
    scores = sentence_scores(sentences, query)
    order = sorted(range(len(sentences)), key=lambda i: (-scores[i], i))
    if scores[order[0]] <= 0:
        order = list(range(len(sentences)))
    chosen: list[int] = []
    used = 0
    for i in order:
        if scores[i] <= 0 and chosen and scores[order[0]] > 0:
            break
        cost = len(sentences[i]) + (1 if chosen else 0)
        if used + cost <= max_chars:
            chosen.append(i)
            used += cost
        elif not chosen:
            return _clip(sentences[i], max_chars)
    return " ".join(sentences[i] for i in sorted(chosen))
