"""The pretraining report: does the pretrained model know what its knowledge groups say, follow the protocol,
and read search results? Written as ``pretrain_report.json`` and ``pretrain_report.md``.

Every figure comes from rollouts of the pretrained policy (``mmsearch_r1.rollout`` with the Hugging Face
engine) on the world's in-domain test questions, a seeded pick of at most ``report_samples`` per group:

- ``direct``: accuracy in the direct workflow (no tools offered; greedy): what the model knows by itself.
  It should be high for ``sight_facts`` and near chance for the other groups.
- ``rag``: accuracy when the right search results are supplied (the environment runs image search, the
  model writes the text query, the environment runs it, the model answers; greedy): can it read results?
  ``rag_query`` takes it apart: how often the query names the pictured entity (recognised, or read from
  the image results' titles) and the question's attribute, and the accuracy where it names both (reading).
- ``on_demand`` at temperature 1: the format-valid rate (target >= 95%), the base model's search ratio
  (its uncalibrated habit, which reinforcement learning then calibrates) and accuracy.
- ``chance``: the accuracy of always answering the most common answer of the attribute among the
  training questions, for comparison with ``direct``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmsearch_r1.models.policy import Policy
    from mmsearch_r1.tools.base import Toolbox
    from mmsearch_r1.trajectory import Trajectory
    from mmsearch_r1.world.schema import World

GROUP_ORDER = ("sight_facts", "sight_only", "facts_only", "neither")
FORMAT_TARGET = 0.95


def pick_per_group(samples: list, per_group: int, seed: int) -> list:
    """At most ``per_group`` samples of each knowledge group, a seeded pick, in a stable order."""
    import numpy as np

    rng = np.random.default_rng([seed, 7])
    picked = []
    for group in GROUP_ORDER:
        members = [s for s in samples if s.extra.get("group") == group]
        order = rng.permutation(len(members))[:per_group]
        picked += [members[i] for i in sorted(order)]
    return picked


def chance_accuracy(train: list, test: list) -> float:
    """Accuracy of answering each question with its attribute's most common training answer."""
    counts: dict[str, Counter] = {}
    for s in train:
        counts.setdefault(s.extra["attribute"], Counter())[s.answers[0]] += 1
    hits = [s.answers[0] == counts[s.extra["attribute"]].most_common(1)[0][0] for s in test if s.extra["attribute"] in counts]
    return sum(hits) / len(hits) if hits else 0.0


def graded(trajectory: "Trajectory", sample) -> Any:
    """The reward's breakdown of an episode against its sample's answers (``reward.score``); None when the
    episode has no assistant turn."""
    from mmsearch_r1.reward import score

    turns = trajectory.assistant_turns
    return score(turns, sample.answers) if turns else None


def by_group(samples: list, rows: list) -> dict[str, list]:
    """Each row, one per sample, under its sample's knowledge group and under ``all``."""
    grouped: dict[str, list] = {}
    for sample, row in zip(samples, rows):
        for key in (sample.extra.get("group", "unknown"), "all"):
            grouped.setdefault(key, []).append(row)
    return grouped


def group_figures(trajectories: list["Trajectory"], samples: list) -> dict[str, dict[str, float]]:
    """Per knowledge group (and ``all``): n, accuracy, format-valid rate, search ratio, image/text search ratios."""
    from mmsearch_r1.eval.metrics import outcome_of, summarize

    per_sample = []
    for trajectory, sample in zip(trajectories, samples):
        breakdown = graded(trajectory, sample)
        fmt = float(breakdown.format) if breakdown else 0.0
        per_sample.append((outcome_of(trajectory, bool(breakdown and breakdown.accuracy)), fmt))
    figures = {}
    for group, rows in by_group(samples, per_sample).items():
        m = summarize([o for o, _ in rows], bootstrap_samples=0)
        figures[group] = {
            "n": m.n, "accuracy": round(m.accuracy, 4), "format_valid": round(sum(f for _, f in rows) / len(rows), 4),
            "search_ratio": round(m.search_ratio, 4), "image_search_ratio": round(m.image_search_ratio, 4),
            "text_search_ratio": round(m.text_search_ratio, 4),
        }
    return figures


def query_figures(trajectories: list["Trajectory"], samples: list, world: "World") -> dict[str, dict[str, float | None]]:
    """Per knowledge group (and ``all``), the rag workflow's three skills apart: the share of queries that name
    the pictured entity, the share that name the question's attribute, and the accuracy where both are named
    (None where no query named both)."""
    from mmsearch_r1.models.demos import fact_in, name_in, sample_entity
    from mmsearch_r1.protocol import parse_turn

    per_sample = []
    for trajectory, sample in zip(trajectories, samples):
        turns = trajectory.assistant_turns
        action = parse_turn(turns[0]) if turns else None
        query = action.query if action is not None and action.kind == "text_search" else ""
        pictured, asked = sample_entity(sample, world)
        breakdown = graded(trajectory, sample)
        per_sample.append((name_in(query, pictured.name), fact_in(query, [world.attribute(asked).phrase]), bool(breakdown and breakdown.accuracy)))
    figures = {}
    for group, rows in by_group(samples, per_sample).items():
        both = [correct for entity, attribute, correct in rows if entity and attribute]
        figures[group] = {"query_names_entity": round(sum(r[0] for r in rows) / len(rows), 4),
                          "query_names_attribute": round(sum(r[1] for r in rows) / len(rows), 4),
                          "accuracy_when_both": round(sum(both) / len(both), 4) if both else None}
    return figures


def evaluate_pretrained(policy: "Policy", cfg: Any, world: "World", world_dir: Path, toolbox: "Toolbox", progress: bool = False) -> dict:
    """Run the three rollouts of the report and return their figures per group."""
    from mmsearch_r1.engines.config import SamplingConfig
    from mmsearch_r1.engines.hf import HFEngine
    from mmsearch_r1.models.pretrain import read_split
    from mmsearch_r1.rollout import rollout

    train, test = read_split(world_dir, "train"), read_split(world_dir, "test")
    samples = pick_per_group(test, cfg.pretrain.report_samples, cfg.seed)
    engine = HFEngine(policy)
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=cfg.pretrain.report_max_new_tokens)
    sampled = SamplingConfig(temperature=1.0, max_new_tokens=cfg.pretrain.report_max_new_tokens)
    runs = {"direct": ("direct", greedy), "rag": ("rag", greedy), "on_demand_t1": ("on_demand", sampled)}
    figures: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    episodes: dict[str, list["Trajectory"]] = {}
    for name, (workflow, sampling) in runs.items():
        clock = time.perf_counter()
        episodes[name] = rollout(samples, engine, toolbox, protocol=cfg.protocol, sampling=sampling, seed=cfg.seed,
                                 workflow=workflow, progress=progress)
        figures[name] = group_figures(episodes[name], samples)
        seconds[name] = round(time.perf_counter() - clock, 2)
    rag_query = query_figures(episodes["rag"], samples, world)
    chance = {g: round(chance_accuracy(train, [s for s in samples if s.extra.get("group") == g]), 4) for g in GROUP_ORDER}
    chance["all"] = round(chance_accuracy(train, samples), 4)
    return {"questions": len(samples), "chance": chance, "figures": figures, "rag_query": rag_query, "seconds": seconds}


def verdicts(evaluation: dict) -> dict[str, bool]:
    """Whether each group behaves as designed (direct accuracy high where known, near chance elsewhere)."""
    direct, chance = evaluation["figures"]["direct"], evaluation["chance"]
    known = direct.get("sight_facts", {}).get("accuracy", 0.0)
    unknown = {g: direct.get(g, {}).get("accuracy", 0.0) for g in GROUP_ORDER[1:]}
    fmt = evaluation["figures"]["on_demand_t1"].get("all", {}).get("format_valid", 0.0)
    return {
        "sight_facts answered directly (direct accuracy >= 0.8)": known >= 0.8,
        "other groups near chance (direct accuracy <= chance + 0.15)": all(a <= chance[g] + 0.15 for g, a in unknown.items()),
        f"format-valid at temperature 1 >= {FORMAT_TARGET:.0%}": fmt >= FORMAT_TARGET,
        "reads results (rag accuracy >= 0.8)": evaluation["figures"]["rag"].get("all", {}).get("accuracy", 0.0) >= 0.8,
    }


def markdown(report: dict) -> str:
    """The report as a Markdown page."""
    ev = report["evaluation"]
    lines = ["# Pretraining report", "",
             f"World `{report['world']}`, seed {report['seed']}; {report['parameters']:,} parameters; vocabulary {report['vocab_size']}; "
             f"{ev['questions']} test questions (at most {report['report_samples']} per knowledge group).", "",
             "| group | direct acc. | chance | rag acc. | on-demand acc. (T=1) | format-valid (T=1) | search ratio (T=1) | image / text search (T=1) |",
             "|---|---|---|---|---|---|---|---|"]
    f = ev["figures"]
    for group in (*GROUP_ORDER, "all"):
        d, r, o = f["direct"].get(group), f["rag"].get(group), f["on_demand_t1"].get(group)
        if not (d and r and o):
            continue
        lines.append(f"| {group} | {d['accuracy']:.2f} | {ev['chance'].get(group, float('nan')):.2f} | {r['accuracy']:.2f} | {o['accuracy']:.2f} | "
                     f"{o['format_valid']:.3f} | {o['search_ratio']:.2f} | {o['image_search_ratio']:.2f} / {o['text_search_ratio']:.2f} |")
    if "rag_query" in ev:  # reports written before it came in lack it
        lines += ["", "The rag workflow's query, taken apart (what reading a result needs):", "",
                  "| group | query names the entity | query names the attribute | rag acc. where it names both |", "|---|---|---|---|"]
        for group in (*GROUP_ORDER, "all"):
            if q := ev["rag_query"].get(group):
                both = "–" if q["accuracy_when_both"] is None else f"{q['accuracy_when_both']:.2f}"
                lines.append(f"| {group} | {q['query_names_entity']:.2f} | {q['query_names_attribute']:.2f} | {both} |")
    lines += ["", "## Checks", ""] + [f"- [{'x' if ok else ' '}] {name}" for name, ok in report["checks"].items()]
    t = report["training"]
    lines += ["", "## Training", "",
              f"- {t['steps']} optimizer steps (resumed from step {t['resumed_from_step']}), {report['tokens']:,} tokens "
              f"({report['trained_tokens']:,} in the loss), {t['tokens_per_second']} tokens/s; loss {t['losses'][0] if t['losses'] else 'n/a'} -> "
              f"{t['losses'][-1] if t['losses'] else 'n/a'}.",
              f"- demonstrations per epoch: {report['demonstrations_per_epoch']}; action sequences: "
              + ", ".join(f"{k} {v}" for k, v in sorted(report["action_sequences"].items())) + ".",
              "- seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in report["seconds"].items()) + "."]
    return "\n".join(lines) + "\n"


def write_report(policy: "Policy", cfg: Any, world: "World", world_dir: Path, toolbox: "Toolbox", out: Path,
                 summary: dict, timings: dict[str, float], progress: bool = False) -> dict:
    """Evaluate the pretrained policy and write ``pretrain_report.json`` and ``.md`` into ``out``."""
    clock = time.perf_counter()
    evaluation = evaluate_pretrained(policy, cfg, world, world_dir, toolbox, progress)
    timings = {**timings, "report": time.perf_counter() - clock}
    timings["total"] = sum(timings.values())
    report = {**summary, "report_samples": cfg.pretrain.report_samples, "evaluation": evaluation,
              "checks": verdicts(evaluation), "seconds": {k: round(v, 2) for k, v in timings.items()}}
    (out / "pretrain_report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "pretrain_report.md").write_text(markdown(report))
    return report
