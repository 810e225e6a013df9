"""Search balancing: label each question by whether *this* model needs search for it, then sample a mix.

The published data step: the model answers every candidate question ``k`` times without search (``direct``)
and ``k`` times with search (``rag``: image search, then a text search it writes). A question it answers
right without search often enough (``free_threshold``) is ``search_free``; one it gets right only with
search is ``search_required``; one it fails both ways is dropped (``keep_unsolved`` keeps it as required).
The training set then mixes the two at ``free_share`` (published: about 1 free : 2 required).

With ``drop_search_paying`` (opt-in) the labels also agree with the reward: a question answered right
without search often enough, but on which searching still earns more (success with search times
``1 - search_penalty`` above success without), is dropped too. As ``search_free`` it would teach GRPO to
search where the label says not to; as ``search_required``, to search on what the model already knows.

Pure parts (``success_rates``, ``label``, ``search_pays``, ``balanced_subset``, ``agreement``) are separate from the runner
(``balance``), which needs an engine and tools.

>>> label(0.75, 1.0, free_threshold=0.5), label(0.0, 0.5, free_threshold=0.5), label(0.0, 0.0, free_threshold=0.5)
('search_free', 'search_required', None)
>>> label(0.75, 1.0, free_threshold=0.5, search_penalty=0.1), label(0.75, 0.75, free_threshold=0.5, search_penalty=0.1)
(None, 'search_free')
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Sequence

import numpy as np

from mmsearch_r1.data.schema import VQASample
from mmsearch_r1.errors import ConfigError
from mmsearch_r1.reward import is_correct

if TYPE_CHECKING:
    from mmsearch_r1.config import ProtocolConfig
    from mmsearch_r1.data.config import BalanceConfig
    from mmsearch_r1.engines.base import Engine
    from mmsearch_r1.tools.base import Toolbox
    from mmsearch_r1.trajectory import Trajectory


def success_rates(trajectories: Sequence["Trajectory"], match: str = "em") -> dict[str, float]:
    """Share of correct final answers per sample id."""
    correct: dict[str, list[bool]] = defaultdict(list)
    for t in trajectories:
        correct[t.sample_id].append(is_correct(t.final_answer, t.gold_answers, match))
    return {sample_id: sum(v) / len(v) for sample_id, v in correct.items()}


def label(direct_rate: float, search_rate: float, *, free_threshold: float, keep_unsolved: bool = False,
          search_penalty: float | None = None) -> str | None:
    """``search_free`` when direct success reaches the threshold, ``search_required`` when only search helps.

    With ``search_penalty``, a question that reaches the threshold is ``search_free`` only if answering at
    once earns at least the reward searching earns; otherwise it is dropped (None), whatever ``keep_unsolved``.
    """
    if direct_rate >= free_threshold:
        if search_penalty is not None and search_pays(direct_rate, search_rate, search_penalty):
            return None
        return "search_free"
    if search_rate > direct_rate or keep_unsolved:
        return "search_required"
    return None


def search_pays(direct_rate: float, search_rate: float, search_penalty: float) -> bool:
    """Whether searching earns more accuracy reward than answering at once (the format reward aside).

    >>> search_pays(0.75, 1.0, 0.1), search_pays(0.75, 0.75, 0.1), search_pays(0.5, 0.75, 0.5)
    (True, False, False)
    """
    return (1.0 - search_penalty) * search_rate > direct_rate


def balanced_subset(samples: Sequence[VQASample], free_share: float, size: int | None, rng: np.random.Generator) -> list[VQASample]:
    """The largest mix with ``free_share`` of search_free samples (at most ``size``), in a seeded random order.

    >>> pool = [VQASample(str(i), "q", b"", ["a"], category="search_free" if i < 5 else "search_required") for i in range(20)]
    >>> chosen = balanced_subset(pool, 1 / 3, None, np.random.default_rng(0))
    >>> Counter(s.category for s in chosen)
    Counter({'search_required': 10, 'search_free': 5})
    """
    free = [s for s in samples if s.category == "search_free"]
    required = [s for s in samples if s.category == "search_required"]
    if free_share <= 0:
        n_free, n_required = 0, len(required)
    elif free_share >= 1:
        n_free, n_required = len(free), 0
    else:
        total = min(len(free) / free_share, len(required) / (1 - free_share))
        if size is not None:
            total = min(total, size)
        n_free = int(math.floor(total * free_share + 1e-9))
        n_required = int(math.floor(total * (1 - free_share) + 1e-9))
    if size is not None and n_free + n_required > size:
        n_free, n_required = min(n_free, size), min(n_required, size - min(n_free, size))
    pick = lambda pool, n: [pool[i] for i in sorted(rng.permutation(len(pool))[:n])]  # noqa: E731
    chosen = pick(free, n_free) + pick(required, n_required)
    return [chosen[i] for i in rng.permutation(len(chosen))]


def agreement(samples: Sequence[VQASample]) -> dict:
    """How the model's labels agree with the generator's ``search_need`` (free iff need is ``none``)."""
    labelled = [s for s in samples if s.category and s.search_need]
    table = Counter((s.search_need, s.category) for s in labelled)
    agree = sum(n for (need, cat), n in table.items() if (need == "none") == (cat == "search_free"))
    return {
        "n": len(labelled),
        "agreement": agree / len(labelled) if labelled else None,
        "by_need": {need: {cat: table[(need, cat)] for cat in ("search_free", "search_required")}
                    for need in sorted({need for need, _ in table})},
    }


@dataclass
class BalanceResult:
    """The balanced set, every candidate's label and rates, and the agreement with the generator."""

    selected: list[VQASample]
    labelled: list[VQASample]
    dropped: list[str]
    direct_rate: dict[str, float] = field(default_factory=dict)
    search_rate: dict[str, float] = field(default_factory=dict)
    search_paying: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "candidates": len(self.labelled) + len(self.dropped) + len(self.search_paying),
            "labelled": dict(Counter(s.category for s in self.labelled)),
            "dropped_unsolved": len(self.dropped),
            "dropped_search_paying": len(self.search_paying),
            "selected": dict(Counter(s.category for s in self.selected)),
            "agreement_with_generator": agreement(self.labelled),
            "selected_by_need": dict(Counter(s.search_need or "unknown" for s in self.selected)),
        }


def balance(
    samples: Sequence[VQASample],
    engine: "Engine",
    toolbox: "Toolbox",
    cfg: "BalanceConfig",
    *,
    protocol: "ProtocolConfig",
    max_new_tokens: int,
    match: str = "em",
    search_penalty: float | None = None,
    seed: int = 0,
    progress: bool = False,
) -> BalanceResult:
    """Run the model ``k`` times per question without and with search, label, and sample the balanced set.

    ``search_penalty`` is the reward's; with ``cfg.drop_search_paying`` it decides which questions answered
    right without search still pay to search (and every question then gets its search episodes).
    """
    if cfg.drop_search_paying and search_penalty is None:
        raise ConfigError("balance.drop_search_paying weighs the reward's search penalty; pass search_penalty=cfg.reward.search_penalty.")
    from mmsearch_r1.engines.config import SamplingConfig
    from mmsearch_r1.rollout import rollout

    if cfg.candidates is not None and cfg.candidates < len(samples):
        rng = np.random.default_rng(seed)
        samples = [samples[i] for i in sorted(rng.permutation(len(samples))[: cfg.candidates])]
    sampling = SamplingConfig(temperature=cfg.temperature, max_new_tokens=max_new_tokens)
    run = lambda subset, workflow, offset: rollout(  # noqa: E731
        subset, engine, toolbox, n=cfg.k, protocol=protocol, sampling=sampling,
        seed=seed + offset, workflow=workflow, progress=progress,
    )
    direct = success_rates(run(samples, "direct", 0), match)
    penalty = search_penalty if cfg.drop_search_paying else None
    needs_search = samples if penalty is not None else [s for s in samples if direct[s.id] < cfg.free_threshold]
    searched = success_rates(run(needs_search, "rag", 1), match) if needs_search else {}
    labelled, dropped, search_paying = [], [], []
    for sample in samples:
        category = label(direct[sample.id], searched.get(sample.id, 0.0), free_threshold=cfg.free_threshold,
                         keep_unsolved=cfg.keep_unsolved, search_penalty=penalty)
        if category is not None:
            labelled.append(replace(sample, category=category))
        elif direct[sample.id] >= cfg.free_threshold:
            search_paying.append(sample.id)
        else:
            dropped.append(sample.id)
    selected = balanced_subset(labelled, cfg.free_share, cfg.size, np.random.default_rng(seed))
    return BalanceResult(selected=selected, labelled=labelled, dropped=dropped, direct_rate=direct, search_rate=searched,
                         search_paying=search_paying)
