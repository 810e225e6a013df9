"""Made-up pronounceable names from a seeded syllable generator.

A name is two or three consonant-vowel syllables, the last one sometimes closed by a consonant
(``Shimu``, ``Drostomi``). Names are unique within a world, no two are near-spellings of each other, and
none equals a word of the world's texts, so that a name in a query or an answer always means one entity or
one city.

>>> import numpy as np
>>> names = entity_names(np.random.default_rng(0), 5)
>>> len(set(names)) == 5 and all(n[0].isupper() and n[1:].islower() for n in names)
True
"""

from __future__ import annotations

import difflib

import numpy as np

ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "st", "tr", "sh")
VOWELS = ("a", "e", "i", "o", "u")
CODAS = ("n", "r", "l", "s", "k", "m")
CITY_ENDINGS = ("mar", "dun", "holm", "wick", "ford", "gard", "port", "stead")


def _syllables(rng: np.random.Generator, count: int) -> str:
    parts = [ONSETS[rng.integers(len(ONSETS))] + VOWELS[rng.integers(len(VOWELS))] for _ in range(count)]
    if rng.random() < 0.5:
        parts[-1] += CODAS[rng.integers(len(CODAS))]
    return "".join(parts)


def _alike(a: str, b: str) -> bool:
    """Names too close to tell apart at a glance (``Drafis``/``Drafus``): difflib similarity of 0.8 or more."""
    matcher = difflib.SequenceMatcher(None, a.lower(), b.lower())
    # The cheap upper bounds first, as difflib.get_close_matches does; same answer as ratio() alone.
    return matcher.real_quick_ratio() >= 0.8 and matcher.quick_ratio() >= 0.8 and matcher.ratio() >= 0.8


def _unique(rng: np.random.Generator, count: int, make, taken: set[str]) -> list[str]:
    names: list[str] = []
    for _ in range(count * 200):
        if len(names) == count:
            return names
        name = make(rng).capitalize()
        if name.lower() not in taken and not any(_alike(name, other) for other in names):
            taken.add(name.lower())
            names.append(name)
    raise RuntimeError(f"the name generator ran out of names after {len(names)} of {count}")


def entity_names(rng: np.random.Generator, count: int, taken: set[str] | None = None) -> list[str]:
    """``count`` distinct entity names of 2-3 syllables; words in ``taken`` (lower case) are avoided and grown."""
    taken = set() if taken is None else taken
    return _unique(rng, count, lambda r: _syllables(r, 2 + int(r.random() < 0.4)), taken)


def city_names(rng: np.random.Generator, count: int, taken: set[str] | None = None) -> list[str]:
    """``count`` distinct city names: one or two syllables and a town-like ending (``Lomarholm``)."""
    taken = set() if taken is None else taken
    return _unique(rng, count, lambda r: _syllables(r, 1 + int(r.random() < 0.3)) + CITY_ENDINGS[r.integers(len(CITY_ENDINGS))], taken)
