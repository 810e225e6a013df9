"""Evaluation metrics: pure functions over evaluated episodes.

An episode is reduced to an ``Outcome`` (was it correct, which searches did it make, how long did it take,
which labels does its sample carry); ``summarize`` turns a list of outcomes into ``Metrics``, and ``breakdown``
groups them per data set, workflow and label.

Definitions (one value per question, then averaged over the questions of a group):

- ``accuracy``: the answer is correct (EM, SubEM or judge verdict, decided before this module).
- ``search_ratio``: the episode made at least one search; ``image_search_ratio`` / ``text_search_ratio``: at least
  one image / text search; ``both_search_ratio``: at least one of each.
- ``searches_per_question``: image plus text searches.
- ``correct_without_search``: correct *and* made no search, as a share of all questions of the group, so that
  ``accuracy = correct_without_search + correct_with_search``.
- ``tool_failures``: failed tool calls in total; ``tool_failure_rate``: failed calls per search made.
- latency: wall-clock seconds per question, where the episodes carry it.

Confidence intervals are percentile bootstrap intervals over questions, from a seeded generator.

Relation to the paper: ``accuracy`` and ``search_ratio`` (share of questions answered with at least one
search) are the paper's headline metrics; the split by search type, ``correct_without_search``, tool failures,
latency and the intervals are additions of ours.

>>> outs = [Outcome("a", True, 0, 0), Outcome("b", True, 1, 0), Outcome("c", False, 1, 1), Outcome("d", False, 0, 0)]
>>> m = summarize(outs, bootstrap_samples=0)
>>> (m.n, m.accuracy, m.search_ratio, m.both_search_ratio, m.searches_per_question, m.correct_without_search)
(4, 0.5, 0.5, 0.25, 0.75, 0.25)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

if TYPE_CHECKING:
    from mmsearch_r1.trajectory import Trajectory

LABEL_KINDS = ("category", "search_need")


@dataclass(frozen=True)
class Outcome:
    """One evaluated episode, reduced to what the metrics read."""

    sample_id: str
    correct: bool
    image_searches: int = 0
    text_searches: int = 0
    tool_failures: int = 0
    latency_s: float | None = None
    dataset: str = "data"
    workflow: str = "on_demand"
    category: str | None = None
    search_need: str | None = None

    @property
    def searches(self) -> int:
        return self.image_searches + self.text_searches


def outcome_of(trajectory: "Trajectory", correct: bool) -> Outcome:
    """The outcome of a trajectory; labels, data set, workflow and latency come from ``trajectory.meta``."""
    meta = trajectory.meta or {}
    latency = meta.get("latency_s")
    return Outcome(
        sample_id=trajectory.sample_id,
        correct=bool(correct),
        image_searches=int(trajectory.image_searches),
        text_searches=int(trajectory.text_searches),
        tool_failures=int(trajectory.tool_failures),
        latency_s=float(latency) if latency is not None else None,
        dataset=str(meta.get("dataset") or meta.get("data_source") or "data"),
        workflow=str(meta.get("workflow") or "on_demand"),
        category=meta.get("category"),
        search_need=meta.get("search_need"),
    )


@dataclass
class Metrics:
    """The metrics of one group of questions; ``*_ci`` are (low, high) or None when not computed."""

    n: int
    accuracy: float
    search_ratio: float
    image_search_ratio: float
    text_search_ratio: float
    both_search_ratio: float
    searches_per_question: float
    correct_without_search: float
    tool_failures: int
    tool_failure_rate: float
    latency_mean_s: float | None = None
    latency_p95_s: float | None = None
    accuracy_ci: tuple[float, float] | None = None
    search_ratio_ci: tuple[float, float] | None = None
    per_label: dict[str, dict[str, "Metrics"]] = field(default_factory=dict)

    def to_json(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if k != "per_label"}
        for key in ("accuracy_ci", "search_ratio_ci"):
            data[key] = list(data[key]) if data[key] is not None else None
        if self.per_label:
            data["per_label"] = {kind: {label: m.to_json() for label, m in groups.items()} for kind, groups in self.per_label.items()}
        return data


# --- pure math -----------------------------------------------------------------------------------


def bootstrap_ci(values: Sequence[float], *, samples: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (shape [n]).

    Draws ``samples`` resamples of size n with replacement (an [samples, n] index matrix from
    ``numpy.random.default_rng(seed)``) and returns the (1-level)/2 and (1+level)/2 quantiles of their means.

    >>> bootstrap_ci([1.0, 1.0, 1.0], samples=50)
    (1.0, 1.0)
    >>> lo, hi = bootstrap_ci([0.0, 1.0] * 50, samples=2000, seed=1)
    >>> 0.35 < lo < 0.5 < hi < 0.65
    True
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        raise ValueError("bootstrap_ci needs at least one value.")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(samples, x.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def summarize(outcomes: Sequence[Outcome], *, bootstrap_samples: int = 1000, level: float = 0.95, seed: int = 0) -> Metrics:
    """The metrics of a group of outcomes (see the module docstring for each definition)."""
    if not outcomes:
        raise ValueError("summarize needs at least one outcome.")
    correct = np.array([o.correct for o in outcomes], dtype=np.float64)
    image = np.array([o.image_searches > 0 for o in outcomes], dtype=np.float64)
    text = np.array([o.text_searches > 0 for o in outcomes], dtype=np.float64)
    searched = np.maximum(image, text)
    searches = np.array([o.searches for o in outcomes], dtype=np.float64)
    failures = int(sum(o.tool_failures for o in outcomes))
    latencies = np.array([o.latency_s for o in outcomes if o.latency_s is not None], dtype=np.float64)
    metrics = Metrics(
        n=len(outcomes),
        accuracy=float(correct.mean()),
        search_ratio=float(searched.mean()),
        image_search_ratio=float(image.mean()),
        text_search_ratio=float(text.mean()),
        both_search_ratio=float((image * text).mean()),
        searches_per_question=float(searches.mean()),
        correct_without_search=float((correct * (1.0 - searched)).mean()),
        tool_failures=failures,
        tool_failure_rate=failures / searches.sum() if searches.sum() > 0 else 0.0,
        latency_mean_s=float(latencies.mean()) if latencies.size else None,
        latency_p95_s=float(np.quantile(latencies, 0.95)) if latencies.size else None,
    )
    if bootstrap_samples > 0:
        metrics.accuracy_ci = bootstrap_ci(correct, samples=bootstrap_samples, level=level, seed=seed)
        metrics.search_ratio_ci = bootstrap_ci(searched, samples=bootstrap_samples, level=level, seed=seed)
    return metrics


def _labels(outcome: Outcome, kind: str) -> str | None:
    return getattr(outcome, kind)


def summarize_with_labels(outcomes: Sequence[Outcome], **kwargs) -> Metrics:
    """``summarize`` of the whole group, with ``per_label`` filled for each label kind present."""
    metrics = summarize(outcomes, **kwargs)
    for kind in LABEL_KINDS:
        groups: dict[str, list[Outcome]] = {}
        for o in outcomes:
            label = _labels(o, kind)
            if label is not None:
                groups.setdefault(str(label), []).append(o)
        if groups:
            metrics.per_label[kind] = {label: summarize(group, **kwargs) for label, group in sorted(groups.items())}
    return metrics


ALL = "all"


def breakdown(outcomes: Iterable[Outcome], **kwargs) -> dict[str, dict[str, Metrics]]:
    """Metrics per data set and workflow, plus an ``"all"`` data set pooling every question of a workflow.

    Returns ``{dataset: {workflow: Metrics}}``; each ``Metrics`` carries its ``per_label`` groups.
    """
    by_group: dict[tuple[str, str], list[Outcome]] = {}
    by_workflow: dict[str, list[Outcome]] = {}
    for o in outcomes:
        by_group.setdefault((o.dataset, o.workflow), []).append(o)
        by_workflow.setdefault(o.workflow, []).append(o)
    table: dict[str, dict[str, Metrics]] = {}
    for (dataset, workflow), group in by_group.items():
        table.setdefault(dataset, {})[workflow] = summarize_with_labels(group, **kwargs)
    if len({d for d, _ in by_group}) > 1:
        table[ALL] = {wf: summarize_with_labels(group, **kwargs) for wf, group in by_workflow.items()}
    return table
