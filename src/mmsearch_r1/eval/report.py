"""Reports of an evaluation: ``results.json``, a Markdown table, and two plots.

``results.json`` holds, for each data set (plus ``all`` when there are several) and workflow, the metrics of
``mmsearch_r1.eval.metrics.Metrics`` (``accuracy``, ``search_ratio``, ``image_search_ratio``,
``text_search_ratio``, ``searches_per_question``, ``correct_without_search``, ``n``, ...) and the same per
label under ``per_label.category`` / ``per_label.search_need``.

Plots are drawn with matplotlib's Agg canvas directly (no pyplot, so no global backend is changed):
``accuracy_vs_search_ratio.png`` (one point per data set and workflow, bootstrap intervals as error bars) and
``per_label.png`` (accuracy and search ratio per label, one bar per workflow).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from mmsearch_r1.eval.metrics import ALL, LABEL_KINDS, Metrics

Table = Mapping[str, Mapping[str, Metrics]]  # dataset -> workflow -> metrics


def results_json(table: Table, *, match: str, extra: dict | None = None) -> dict:
    """The JSON document of a results table."""
    return {
        "match": match,
        "datasets": {ds: {wf: m.to_json() for wf, m in by_wf.items()} for ds, by_wf in table.items()},
        **(extra or {}),
    }


def write_results_json(table: Table, path: str | Path, *, match: str, extra: dict | None = None) -> Path:
    path = Path(path)
    path.write_text(json.dumps(results_json(table, match=match, extra=extra), indent=2, sort_keys=False) + "\n")
    return path


# --- Markdown ------------------------------------------------------------------------------------


def _pct(value: float | None, ci: tuple[float, float] | None = None) -> str:
    if value is None:
        return "–"
    text = f"{100 * value:.1f}"
    return text + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


_HEADER = ("| data | workflow | n | accuracy % [95% CI] | search % [95% CI] | image % | text % | both % | searches/q "
           "| correct w/o search % | tool failures | latency s |")


def _row(first: str, second: str, m: Metrics) -> str:
    return (f"| {first} | {second} | {m.n} | {_pct(m.accuracy, m.accuracy_ci)} | {_pct(m.search_ratio, m.search_ratio_ci)} "
            f"| {_pct(m.image_search_ratio)} | {_pct(m.text_search_ratio)} | {_pct(m.both_search_ratio)} "
            f"| {_num(m.searches_per_question)} | {_pct(m.correct_without_search)} | {m.tool_failures} | {_num(m.latency_mean_s)} |")


def markdown_table(table: Table, *, match: str, ci_level: float = 0.95) -> str:
    """The results as Markdown: one overall table, then one table per label kind."""
    header = _HEADER.replace("95% CI", f"{100 * ci_level:g}% CI")
    separator = "|" + "|".join("---" for _ in range(header.count("|") - 1)) + "|"
    lines = [f"# Evaluation results (accuracy by `{match}`)", "",
             "Percentages of questions; search = at least one search; searches/q = image + text searches per question; "
             "correct w/o search = correct and no search; latency = seconds per question (batch time / batch size).", "",
             header, separator]
    for ds, by_wf in table.items():
        lines += [_row(ds, wf, m) for wf, m in by_wf.items()]
    for kind in LABEL_KINDS:
        rows = [_row(f"{ds}: {label}", wf, lm) for ds, by_wf in table.items() for wf, m in by_wf.items()
                for label, lm in m.per_label.get(kind, {}).items()]
        if rows:
            lines += ["", f"## Per `{kind}`", "", header.replace("| data |", f"| data: {kind} |"), separator] + rows
    return "\n".join(lines) + "\n"


def write_markdown(table: Table, path: str | Path, *, match: str, ci_level: float = 0.95) -> Path:
    path = Path(path)
    path.write_text(markdown_table(table, match=match, ci_level=ci_level))
    return path


# --- plots ---------------------------------------------------------------------------------------


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(figure)
    return figure


def plot_accuracy_vs_search_ratio(table: Table, path: str | Path) -> Path:
    """One point per (data set, workflow): x = search ratio, y = accuracy, with their bootstrap intervals."""
    figure = _figure(6.4, 4.8)
    ax = figure.add_subplot(1, 1, 1)
    markers = "osD^vP*X"
    datasets = [ds for ds in table if ds != ALL] or list(table)
    workflows = list(dict.fromkeys(wf for by_wf in table.values() for wf in by_wf))
    for wi, wf in enumerate(workflows):
        for di, ds in enumerate(datasets):
            m = table[ds].get(wf)
            if m is None:
                continue
            xerr = [[m.search_ratio - m.search_ratio_ci[0]], [m.search_ratio_ci[1] - m.search_ratio]] if m.search_ratio_ci else None
            yerr = [[m.accuracy - m.accuracy_ci[0]], [m.accuracy_ci[1] - m.accuracy]] if m.accuracy_ci else None
            ax.errorbar([m.search_ratio], [m.accuracy], xerr=xerr, yerr=yerr, fmt=markers[di % len(markers)], color=f"C{wi}",
                        capsize=3, label=wf if di == 0 else None)
    ax.set_xlabel("search ratio")
    ax.set_ylabel("accuracy")
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    workflow_legend = ax.legend(title="workflow", loc="upper left", fontsize=8)
    if len(datasets) > 1:  # data sets by marker shape, in a second legend
        from matplotlib.lines import Line2D

        ax.add_artist(workflow_legend)
        shapes = [Line2D([], [], marker=markers[i % len(markers)], color="0.4", linestyle="") for i in range(len(datasets))]
        ax.legend(shapes, datasets, title="data", loc="upper right", fontsize=8)
    ax.set_title("Accuracy against search ratio")
    figure.tight_layout()
    figure.savefig(path)
    return Path(path)


def _label_order(label: str) -> tuple[int, str]:
    from mmsearch_r1.data.schema import CATEGORIES, SEARCH_NEEDS

    known = list(CATEGORIES) + list(SEARCH_NEEDS)
    return (known.index(label) if label in known else len(known), label)


def plot_per_label(table: Table, path: str | Path) -> Path:
    """Accuracy and search ratio per label (pooled over data sets), one bar per workflow."""
    pooled = table[ALL] if ALL in table else next(iter(table.values()))
    workflows = list(pooled)
    labels = [(kind, label) for kind in LABEL_KINDS for label in sorted(
        {lb for m in pooled.values() for lb in m.per_label.get(kind, {})}, key=_label_order)]
    figure = _figure(max(6.4, 1.1 * len(labels) + 2), 6.4)
    for row, (metric, title) in enumerate((("accuracy", "accuracy"), ("search_ratio", "search ratio"))):
        ax = figure.add_subplot(2, 1, row + 1)
        width = 0.8 / max(len(workflows), 1)
        for wi, wf in enumerate(workflows):
            groups = pooled[wf].per_label
            values = [getattr(groups[kind][label], metric) if label in groups.get(kind, {}) else 0.0 for kind, label in labels]
            ax.bar([i + (wi - (len(workflows) - 1) / 2) * width for i in range(len(labels))], values, width, label=wf, color=f"C{wi}")
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels([label if kind == "category" else f"need: {label}" for kind, label in labels], fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(title)
        ax.grid(axis="y", alpha=0.3)
        if row == 0:
            ax.legend(title="workflow", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
            ax.set_title("Per label" if labels else "Per label (no labelled samples)")
    figure.tight_layout()
    figure.savefig(path)
    return Path(path)
