"""Supervised pretraining of the tiny policy on a demo world: partial knowledge by group, and the protocol.

What the model learns, by knowledge group (``world.schema.GROUPS``):

- sight groups (``sight_facts``, ``sight_only``): to name the entity from its emblem, in the first words of
  its reasoning (``This is Tavorin, and I know it.``; the other groups' emblems: ``This is unknown to me.``);
- whether it knows an entity's facts, in the word after the name (``and`` / ``but``);
- fact groups (``sight_facts``, ``facts_only``): the facts, given the entity's name (after a name it wrote
  or read, and from questions that name the entity);
- every group: the protocol, through scripted demonstrations with real results from the world's indexes
  (``demos.py``), whose search decisions are drawn at random, independently of need; how often a
  demonstration answers at once differs between entities (``direct_spread``), never between groups.

Choices worth knowing:

- Loss only on assistant tokens, and only on the pieces the model can know at that point (``demos.py``).
- Knowledge is mostly taught by *drills*: short questions answered directly, one to a chat, where only the
  knowledge counts in the loss (the name or ``unknown``, ``and`` / ``but``, the fact), not the choice to
  answer (except in the ``direct_drill_share`` of them asked in the direct workflow's prompt). Each epoch
  draws fresh renderings of every entity (``sight_drills`` of a sight-group entity, ``unrecognised_drills``
  of any other) and asks each fact-group fact by name (``fact_drills``). A share of them (``drill_context_share``) is asked inside the protocol's real opening
  turn, so that recognition carries over to the far longer first turn of an episode.
- *Reading drills* (``reading_drills`` per epoch) are the last step of an episode alone: text results, then
  the answer copied from the top summary; the results state a made-up value, so copying is learnt, not facts.
- *Copy drills* (``copy_drills`` per warm-up epoch, ``copy_drills_later`` per later epoch) are a list of the
  world's answer words, then the same words again: dense practice, from the first steps, of the copying
  that reading results takes.
- *Slips* (``slips``, a share of the protocol demonstrations that write a name) write a wrong word there,
  out of the loss, and go on in the format: what a model that samples a wrong word needs to stay in it.
- *Name-reading drills* and *swapped names* (``naming_drills``, ``swapped_names``; off by default) show image
  results whose titles name another entity than the pictured one, so that naming an entity the model cannot
  recognise is learnt as reading the title (docs/model.md, "Reading names").
- The first ``drill_epochs`` epochs hold the drills alone (a warm-up on short, easy questions); each later
  epoch adds ``protocol_demos`` protocol demonstrations with freshly drawn action sequences. Their text
  results state made-up values too (``made_up_results``): copying what the results say is then the only way
  to answer right, and with enough of them the skill appears (docs/model.md, "Reading").
- Batches group demonstrations of similar length (little padding) and are shuffled; AdamW, linear warm-up,
  cosine decay. The whole schedule is planned from the seed before training, so a resumed run takes exactly
  the batches the uninterrupted run would have taken.
- The output folder is the policy itself in Hugging Face layout (``load_policy(out_dir)``), with
  ``pretrain_report.json`` / ``.md`` and the resumable ``checkpoint/`` beside it.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmsearch_r1.errors import ConfigError, DataError
from mmsearch_r1.progress import progress_bar

if TYPE_CHECKING:
    import numpy as np
    import torch

    from mmsearch_r1.models.config import PretrainConfig
    from mmsearch_r1.models.demos import DemoPolicy
    from mmsearch_r1.models.encode import Encoded, PixelCache
    from mmsearch_r1.models.policy import Policy
    from mmsearch_r1.tools.base import Toolbox
    from mmsearch_r1.world.schema import Entity, World

CHECKPOINT = "checkpoint"
STATE_FILE = "state.pt"
STREAM_ACTIONS, STREAM_RENDER, STREAM_BATCHES, STREAM_VALUES, STREAM_SPREAD, STREAM_NAMES, STREAM_COPY, STREAM_SLIPS = 101, 102, 103, 104, 105, 106, 107, 108


# --- the world's text, tools and questions -----------------------------------------------------------


def world_texts(world: "World", world_dir: Path) -> list[str]:
    """Text the tokenizer is trained on: pages, titles, training question templates, name questions, answers."""
    texts = []
    with (world_dir / "pages.jsonl").open() as handle:
        for line in handle:
            page = json.loads(line)
            texts += [page["title"], page["text"]]
    texts += [t.text for t in world.templates if t.split == "train"]
    for entity in world.entities:
        texts += [world.name_question(entity, f.attribute) + " " + " ".join(f.answers) for f in entity.facts]
        texts.append(" ".join(world.text_query(entity, f.attribute) for f in entity.facts))
    return texts


def world_toolbox(world_dir: Path) -> "Toolbox":
    """The world's local image and text indexes, each behind a memo (a search runs once per pretraining)."""
    from mmsearch_r1.models.demos import MemoImageSearch, MemoTextSearch
    from mmsearch_r1.tools.base import Toolbox
    from mmsearch_r1.tools.local_image import LocalImageSearch
    from mmsearch_r1.tools.local_text import LocalTextSearch

    for name in ("image_index", "text_index"):
        if not (world_dir / name).is_dir():
            raise DataError(f"{world_dir} has no {name}/; rebuild the world with indexes (`mmsearch-r1 world build --out {world_dir}`).")
    return Toolbox(image=MemoImageSearch(LocalImageSearch(world_dir / "image_index")), text=MemoTextSearch(LocalTextSearch(world_dir / "text_index")))


def read_split(world_dir: Path, split: str) -> list:
    from mmsearch_r1.data import read_parquet

    path = world_dir / f"{split}.parquet"
    if not path.is_file():
        raise DataError(f"{world_dir} has no {split}.parquet; build a world there with `mmsearch-r1 world build --out {world_dir}`.")
    samples = read_parquet(path)
    if not samples:
        raise DataError(f"{path} holds no questions; rebuild the world with `mmsearch-r1 world build --out {world_dir}`.")
    return samples


# --- planning the demonstrations and batches of every epoch ------------------------------------------


def entity_choices(world: "World", p: "PretrainConfig", seed: int) -> dict[str, "DemoPolicy"]:
    """Each entity's random action choices: ``direct_prob`` moved by up to ``direct_spread`` either way.

    How often a demonstration answers at once then depends on the entity, never on what its questions need:
    every knowledge group gets the same evenly spaced shifts, dealt to its entities in an order drawn from
    the seed, so each group's mean chance is ``direct_prob``.
    """
    import numpy as np

    from mmsearch_r1.models.demos import DemoPolicy

    rng = np.random.default_rng([seed, STREAM_SPREAD])
    choices = {}
    for group in sorted({e.group for e in world.entities}):
        members = [e for e in world.entities if e.group == group]
        shifts = np.linspace(-p.direct_spread, p.direct_spread, len(members)) if len(members) > 1 else np.zeros(1)
        for entity, shift in zip(members, rng.permutation(shifts)):
            chance = float(np.clip(p.direct_prob + shift, 0.0, 1.0))
            image_first = 1.0 if p.name_before_query and not entity.known_by_sight else p.image_first_prob
            choices[entity.name] = DemoPolicy(chance, image_first, p.follow_up_prob, p.fitting_prob)
    return choices


def with_schedule(cfg: Any, size: str) -> Any:
    """The whole config with the pretraining fields it leaves unset taken from the schedule of a world of ``size``
    (``PretrainConfig.for_world``)."""
    return cfg.model_copy(update={"pretrain": cfg.pretrain.for_world(size)})


@dataclass
class Plan:
    """Every optimizer step's batch, in order, and what the demonstrations were."""

    batches: list[list["Encoded"]]
    demos_per_epoch: list[int]
    tokens: int
    trained_tokens: int
    action_counts: dict[str, int]


class DemoSource:
    """Makes the encoded demonstrations and drills of one epoch (images are processed once each)."""

    def __init__(self, cfg: Any, world: "World", samples: list, toolbox: "Toolbox", policy: "Policy"):
        from mmsearch_r1.models.encode import PixelCache
        from mmsearch_r1.protocol import Templates

        cfg = with_schedule(cfg, world.size)
        self.cfg, self.world, self.samples, self.toolbox, self.policy = cfg, world, samples, toolbox, policy
        self.templates = Templates.load(cfg.protocol.template_dir)
        p = cfg.pretrain
        self.choices = entity_choices(world, p, cfg.seed)
        self.pixels: PixelCache = PixelCache(policy.image_processor)

    def _encode(self, demo) -> "Encoded":
        from mmsearch_r1.models.encode import encode_demonstration

        return encode_demonstration(demo, self.policy, self.pixels)

    def epoch(self, e: int, counts: dict[str, int]) -> list["Encoded"]:
        """``protocol_demos`` protocol demonstrations, then the drills, of epoch ``e``.

        The first ``drill_epochs`` epochs hold the drills alone: short, easy questions first let the tiny model
        find how to use the image and the question before it meets long episodes (without them, a run may stall
        on answers that ignore both).
        """
        import numpy as np

        from mmsearch_r1.models.demos import WORKFLOW_ACTIONS, MadeUpFacts, Planned, SwappedNames, draw_actions, sample_entity, scripted_demonstrations

        p, world = self.cfg.pretrain, self.world
        if e < p.drill_epochs:
            return self.drills(e)
        rng = np.random.default_rng([self.cfg.seed, STREAM_ACTIONS, e])
        count = p.protocol_demos
        rounds = [rng.permutation(len(self.samples)) for _ in range(math.ceil(count / len(self.samples)))]
        by_round: dict[tuple[int, str], list[Planned]] = {}
        for k, i in enumerate(int(i) for i in np.concatenate(rounds)[:count]):
            sample = self.samples[i]
            entity, attribute = sample_entity(sample, world)
            u = rng.random()
            workflow = "direct" if u < p.direct_share else "rag" if u < p.direct_share + p.rag_share else "on_demand"
            actions = WORKFLOW_ACTIONS.get(workflow) or draw_actions(rng, self.choices[entity.name], self.cfg.protocol, sample.search_need)
            label = f"{workflow}:{'+'.join(actions)}"
            counts[label] = counts.get(label, 0) + 1
            by_round.setdefault((k // len(self.samples), workflow), []).append(Planned(sample, entity, attribute, actions))
        by_round = self.with_slips(self.with_swapped_names(by_round, e), e)
        toolbox = self.toolbox
        if p.made_up_results:
            toolbox = replace(toolbox, text=MadeUpFacts(toolbox.text, world, [self.cfg.seed, STREAM_VALUES, e]))
        out = []
        for (_, workflow), plans in sorted(by_round.items()):
            # a sample is in each round at most once, so its image names one swap (a sample recurs across rounds)
            swaps = {id(x.sample.image): (x.entity.name, x.shown_as.name) for x in plans if x.shown_as}
            tools = replace(toolbox, image=SwappedNames(toolbox.image, swaps)) if swaps else toolbox
            for demo in scripted_demonstrations(world, plans, tools, self.cfg.protocol, workflow, self.templates, p.refuse_unknown):
                out.append(self._encode(demo))
        return out + self.drills(e)

    @property
    def unrecognisable(self) -> list["Entity"]:
        """The entities the model cannot recognise by sight, in world order: the only ones whose image results
        ``swapped_names`` and ``naming_drills`` give another name."""
        return [x for x in self.world.entities if not x.known_by_sight]

    def with_swapped_names(self, by_round: dict, e: int) -> dict:
        """The plans, a ``swapped_names`` share of those with an image search on an entity the model cannot
        recognise shown as another such entity with the same attribute (``demos.SwappedNames``)."""
        import numpy as np

        share = self.cfg.pretrain.swapped_names
        if share <= 0:
            return by_round
        rng = np.random.default_rng([self.cfg.seed, STREAM_NAMES, e])
        unseen = self.unrecognisable
        out = {}
        for key, plans in sorted(by_round.items()):
            out[key] = []
            for planned in plans:
                others = [x for x in unseen if x is not planned.entity and planned.attribute in {f.attribute for f in x.facts}]
                searches_images = "image_search" in planned.actions or key[1] == "rag"
                if searches_images and not planned.entity.known_by_sight and others and rng.random() < share:
                    planned = replace(planned, shown_as=others[int(rng.integers(len(others)))])
                out[key].append(planned)
        return out

    def with_slips(self, by_round: dict, e: int) -> dict:
        """The plans, a ``slips`` share of those that write a name after image results or in a text query
        given a slip (``demos.Slip``): its place drawn from the plan's, its word from ``demos.slip_words``."""
        import numpy as np

        from mmsearch_r1.models.demos import SLIP_PLACES, Slip, slip_words

        share = self.cfg.pretrain.slips
        if share <= 0:
            return by_round
        rng = np.random.default_rng([self.cfg.seed, STREAM_SLIPS, e])
        words = slip_words(self.world)
        out = {}
        for key, plans in sorted(by_round.items()):
            out[key] = []
            for planned in plans:
                has = {"results": key[1] == "rag" or "image_search" in planned.actions, "query": "text_search" in planned.actions}
                places = [place for place in SLIP_PLACES if has[place]]
                if places and rng.random() < share:
                    planned = replace(planned, slip=Slip(places[int(rng.integers(len(places)))], words[int(rng.integers(len(words)))]))
                out[key].append(planned)
        return out

    def drills(self, e: int) -> list["Encoded"]:
        """Knowledge drills (fresh renderings of every entity, fact-group facts asked by name), then reading,
        name-reading and copy drills (``copying``)."""
        import numpy as np

        from mmsearch_r1.models.demos import Drill, drill_demo
        from mmsearch_r1.world.render import render_entity

        p, world = self.cfg.pretrain, self.world
        rng = np.random.default_rng([self.cfg.seed, STREAM_RENDER, e])
        drills = []
        for entity in world.entities:
            for _ in range(p.sight_drills if entity.known_by_sight else p.unrecognised_drills):
                fact = entity.facts[int(rng.integers(len(entity.facts)))]
                templates = world.templates_for(fact.attribute, "train")
                question = templates[int(rng.integers(len(templates)))].text
                drills.append(Drill(entity, fact.attribute, question, render_entity(world, entity, rng)))
            for fact in entity.facts if entity.facts_known else ():
                drills += [Drill(entity, fact.attribute, world.name_question(entity, fact.attribute))] * p.fact_drills
        order = [drills[i] for i in rng.permutation(len(drills))]
        in_context = round(p.drill_context_share * len(order))
        direct = round(p.direct_drill_share * in_context)  # the first of them in the direct workflow's prompt
        out = [self._encode(drill_demo(f"drill-{e}-c{k}", [d], self.templates, direct=k < direct)) for k, d in enumerate(order[:in_context])]
        packed = order[in_context:]
        chats = [packed[i:i + p.drill_size] for i in range(0, len(packed), p.drill_size)]
        return out + [self._encode(drill_demo(f"drill-{e}-{k}", chat)) for k, chat in enumerate(chats)] + self.reading(e, rng) + self.naming(e) + self.copying(e)

    def reading(self, e: int, rng: "np.random.Generator") -> list["Encoded"]:
        """``reading_drills`` reading drills, on the facts of every entity in turn, each with a made-up value.

        The value shown in the results (and answered) is drawn from the attribute's values in the world, so the
        drills teach copying from the results and not the facts (see ``demos.with_value``).
        """
        import numpy as np

        from mmsearch_r1.models.demos import reading_demo, with_value, world_values

        world, k, count = self.world, self.cfg.protocol.text_top_k, self.cfg.pretrain.reading_drills
        if count == 0:
            return []
        facts = [(entity, fact) for entity in world.entities for fact in entity.facts]
        values = world_values(world)
        order = np.concatenate([rng.permutation(len(facts)) for _ in range(math.ceil(count / len(facts)))])[:count]
        out = []
        for r, i in enumerate(int(i) for i in order):
            entity, fact = facts[i]
            attribute = world.attribute(fact.attribute)
            hits = self.toolbox.text.search(world.text_query(entity, fact.attribute), k)
            templates = world.templates_for(fact.attribute, "train")
            value = values[fact.attribute][int(rng.integers(len(values[fact.attribute])))]
            question = templates[int(rng.integers(len(templates)))].text
            shown = with_value(hits, world, entity, fact.attribute, value)
            out.append(self._encode(reading_demo(f"read-{e}-{r}", question, shown, value, attribute.fact_sentence, self.templates)))
        return out

    def copying(self, e: int) -> list["Encoded"]:
        """The copy drills of epoch ``e`` (``copy_drills`` in a warm-up epoch, ``copy_drills_later`` in a later
        one), each ``COPY_WORDS`` of the world's answer words drawn at random (with repeats) and then repeated
        (``demos.copy_demo``)."""
        import numpy as np

        from mmsearch_r1.models.config import COPY_WORDS
        from mmsearch_r1.models.demos import answer_words, copy_demo

        p = self.cfg.pretrain
        count = p.copy_drills if e < p.drill_epochs else p.copy_drills_later
        if count == 0:
            return []
        rng = np.random.default_rng([self.cfg.seed, STREAM_COPY, e])
        words = answer_words(self.world)
        return [self._encode(copy_demo(f"copy-{e}-{r}", [words[int(i)] for i in rng.integers(len(words), size=COPY_WORDS)])) for r in range(count)]

    def naming(self, e: int) -> list["Encoded"]:
        """``naming_drills`` name-reading drills: a fresh rendering of every entity the model cannot recognise in
        turn, its image results with the titles naming one of them drawn at random (``demos.naming_demo``).

        Like ``swapped_names``, only on entities the model cannot recognise: a model that recognises the
        picture keeps the name it knows (drills over the sight groups taught it to say the title's name
        instead, docs/model.md, "Reading names")."""
        import numpy as np

        from mmsearch_r1.models.demos import naming_demo, swap_names
        from mmsearch_r1.world.render import render_entity

        world, count = self.world, self.cfg.pretrain.naming_drills
        if count == 0:
            return []
        rng = np.random.default_rng([self.cfg.seed, STREAM_NAMES, e, 1])
        entities = self.unrecognisable
        if not entities:
            raise ConfigError("pretrain.naming_drills needs entities the model cannot recognise by sight, and this world has none; set pretrain.naming_drills=0.")
        order = np.concatenate([rng.permutation(len(entities)) for _ in range(math.ceil(count / len(entities)))])[:count]
        out = []
        for r, i in enumerate(int(i) for i in order):
            pictured, named = entities[i], entities[int(rng.integers(len(entities)))]
            attribute = named.facts[int(rng.integers(len(named.facts)))].attribute
            templates = world.templates_for(attribute, "train")
            question = templates[int(rng.integers(len(templates)))].text
            hits = swap_names(self.toolbox.image.search(render_entity(world, pictured, rng), self.cfg.protocol.image_top_k), pictured.name, named.name)
            out.append(self._encode(naming_demo(f"name-{e}-{r}", question, hits, named, world.attribute(attribute).phrase, self.templates)))
        return out


def batch_up(items: list["Encoded"], batch_tokens: int, rng: "np.random.Generator", window: int = 256) -> list[list["Encoded"]]:
    """Shuffle, sort by length inside windows, cut into batches of at most ``batch_tokens`` padded tokens, shuffle.

    An item longer than ``batch_tokens`` is a batch of its own.

    >>> import numpy as np
    >>> from types import SimpleNamespace as S
    >>> items = [S(token_ids=[0] * n) for n in (3, 5, 4, 9, 2)]
    >>> batches = batch_up(items, 10, np.random.default_rng(0))
    >>> sorted(len(b) for b in batches), all(len(b) * max(len(x.token_ids) for x in b) <= 10 for b in batches)
    ([1, 2, 2], True)
    """
    order = [items[i] for i in rng.permutation(len(items))]
    batches: list[list] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda x: len(x.token_ids))
        current: list = []
        for item in chunk:
            longest = len(item.token_ids)  # the chunk is sorted: the newest item is the longest
            if current and longest * (len(current) + 1) > batch_tokens:
                batches.append(current)
                current = []
            current.append(item)
        if current:
            batches.append(current)
    return [batches[i] for i in rng.permutation(len(batches))]


def plan(cfg: Any, source: DemoSource, progress: bool = False) -> Plan:
    """The batches of every epoch (a fractional last epoch keeps the first part of its batches)."""
    import numpy as np

    p = cfg.pretrain
    batches: list[list] = []
    per_epoch, counts = [], {}
    epochs = math.ceil(p.epochs)
    with progress_bar("demonstrations", epochs, enabled=progress, transient=True) as advance:
        for e in range(epochs):
            items = source.epoch(e, counts)
            per_epoch.append(len(items))
            epoch_batches = batch_up(items, p.batch_tokens, np.random.default_rng([cfg.seed, STREAM_BATCHES, e]))
            keep = len(epoch_batches) if e + 1 <= p.epochs else max(1, round(len(epoch_batches) * (p.epochs - e)))
            batches += epoch_batches[:keep]
            advance()
    tokens = sum(len(x.token_ids) for b in batches for x in b)
    trained = sum(sum(x.loss_mask) for b in batches for x in b)
    return Plan(batches, per_epoch, tokens, trained, counts)


# --- training -----------------------------------------------------------------------------------------


def collate(batch: list["Encoded"], pad_id: int, image_token_id: int, device: str = "cpu") -> dict:
    """Right-padded model inputs on ``device`` (``engines.hf.pad_batch``, as the rollout engine builds them) and
    the loss mask."""
    import torch

    from mmsearch_r1.engines.hf import pad_batch

    inputs = pad_batch([x.token_ids for x in batch], [p for x in batch for p in x.pixel_values], [g for x in batch for g in x.image_grid_thw],
                       pad_id=pad_id, image_token_id=image_token_id, left=False, device=device)
    mask = torch.zeros(inputs["input_ids"].shape, dtype=torch.float32)
    for row, x in enumerate(batch):
        mask[row, :len(x.loss_mask)] = torch.tensor(x.loss_mask, dtype=torch.float32)
    return {"inputs": inputs, "loss_mask": mask.to(device)}


def masked_lm_loss(logits: "torch.Tensor", input_ids: "torch.Tensor", loss_mask: "torch.Tensor") -> "torch.Tensor":
    """Mean next-token cross-entropy over tokens with mask 1.

    Shapes: logits [B, L, V], input_ids [B, L], loss_mask [B, L] (1 on tokens to predict). The token at t
    is predicted from position t - 1.
    """
    import torch.nn.functional as F

    targets = input_ids[:, 1:]
    weights = loss_mask[:, 1:]
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), reduction="none")
    return (nll * weights.reshape(-1)).sum() / weights.sum().clamp(min=1.0)


def lm_loss(model: Any, batch: dict, *, head_on_loss_only: bool) -> "torch.Tensor":
    """``masked_lm_loss`` of ``model`` on a collated ``batch``.

    With ``head_on_loss_only`` the output head runs only at the positions in the loss (a few tokens of each
    chat: the assistant's), not at every position: the same loss, in fewer operations, rounded otherwise.
    Only for a model whose forward is its body, then its head (``engines.hf.body_and_head``); any other
    model runs its whole forward.
    """
    import torch.nn.functional as F

    from mmsearch_r1.engines.hf import body_and_head, logits_at_marked

    inputs, mask = batch["inputs"], batch["loss_mask"]
    parts = body_and_head(model) if head_on_loss_only else None
    if parts is None:
        return masked_lm_loss(model(**inputs).logits, inputs["input_ids"], mask)
    marked = mask != 0
    marked[:, 0] = False  # the first token is predicted by nothing
    logits, rows, columns = logits_at_marked(parts, inputs, marked)
    nll = F.cross_entropy(logits.float(), inputs["input_ids"][rows, columns], reduction="none")
    return (nll * mask[rows, columns]).sum() / mask[:, 1:].sum().clamp(min=1.0)


def lr_at(step: int, total: int, peak: float, warmup: int, min_ratio: float) -> float:
    """Linear warm-up to ``peak`` over ``warmup`` steps, then cosine decay to ``peak * min_ratio`` at ``total``.

    >>> lr_at(0, 100, 1.0, 10, 0.1), lr_at(10, 100, 1.0, 10, 0.1), round(lr_at(100, 100, 1.0, 10, 0.1), 6)
    (0.1, 1.0, 0.1)
    """
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def fingerprint(cfg: Any, world_dir: Path) -> str:
    """What a checkpoint must match to be resumed: model, pretraining, protocol, seed, the world file and the
    version of the demonstrations."""
    from mmsearch_r1.config import stamp_settings
    from mmsearch_r1.models.config import DEMONSTRATIONS_VERSION

    parts = {
        "model": cfg.model.model_dump(mode="json"),
        "pretrain": stamp_settings(cfg.pretrain),
        "protocol": cfg.protocol.model_dump(mode="json"), "seed": cfg.seed,
        "world": hashlib.sha256((world_dir / "world.json").read_bytes()).hexdigest(),
        "demonstrations": DEMONSTRATIONS_VERSION,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def save_checkpoint(folder: Path, step: int, model, optimizer, stamp: str, losses: list[float]) -> None:
    """Model, optimizer, RNG and step, written atomically (a crash leaves the previous checkpoint)."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    state = {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "torch_rng": torch.get_rng_state(), "fingerprint": stamp, "losses": losses}
    tmp = folder / (STATE_FILE + ".tmp")
    torch.save(state, tmp)
    tmp.replace(folder / STATE_FILE)


def checkpoint_state(folder: Path, stamp: str) -> dict | None:
    """The checkpoint in ``folder`` (None when there is none), refused when another config or world made it."""
    import torch

    path = folder / STATE_FILE
    if not path.is_file():
        return None
    state = torch.load(path, weights_only=False, map_location="cpu")  # load_state_dict copies to the model's device
    if state["fingerprint"] != stamp:
        raise ConfigError(f"the checkpoint in {folder} was made with another config or world; pass a new --out, or delete {folder} to start over.")
    return state


def load_checkpoint(state: dict | None, model, optimizer) -> tuple[int, list[float]]:
    """Restore a checkpoint's ``state`` (returns the next step and the loss history); (0, []) when there is none."""
    import torch

    if state is None:
        return 0, []
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"]), list(state["losses"])


def train_steps(policy: "Policy", batches: list[list["Encoded"]], cfg: Any, folder: Path, stamp: str, progress: bool,
                resume: dict | None = None) -> dict:
    """The optimizer loop with periodic checkpoints into ``folder``; resumes from the checkpoint state ``resume``."""
    import torch

    from mmsearch_r1.engines.chat import ChatEncoder

    p = cfg.pretrain
    model = policy.model.to(p.device)
    decay = [w for n, w in model.named_parameters() if w.ndim >= 2 and "embed" not in n]
    no_decay = [w for n, w in model.named_parameters() if not (w.ndim >= 2 and "embed" not in n)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": p.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=p.lr, betas=(0.9, 0.95),
    )
    start, losses = load_checkpoint(resume, model, optimizer)
    encoder = ChatEncoder(policy.processor)
    total = len(batches)
    model.train()
    started, tokens = time.perf_counter(), 0
    with progress_bar("pretrain", total, enabled=progress, completed=start, transient=True) as advance:
        for step in range(start, total):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, p.lr, p.warmup_steps, p.min_lr_ratio)
            batch = collate(batches[step], encoder.pad_id, encoder.image_token_id, device=p.device)
            loss = lm_loss(model, batch, head_on_loss_only=p.head_on_loss_only)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), p.grad_clip)
            optimizer.step()
            losses.append(round(float(loss.detach()), 5))
            tokens += int(batch["inputs"]["attention_mask"].sum())
            if (step + 1) % p.checkpoint_every == 0 and step + 1 < total:
                save_checkpoint(folder, step + 1, model, optimizer, stamp, losses)
            advance()
    model.eval()
    seconds = time.perf_counter() - started
    save_checkpoint(folder, total, model, optimizer, stamp, losses)
    return {"steps": total, "resumed_from_step": start, "seconds": round(seconds, 2),
            "tokens_per_second": round(tokens / seconds, 1) if seconds > 0 else None, "losses": losses}


# --- the whole stage ----------------------------------------------------------------------------------


def pretrain(cfg: Any, world_dir: str | Path, out_dir: str | Path, *, progress: bool = False, report: bool = True) -> Path:
    """Pretrain the tiny policy on a world; returns ``out_dir``, a policy folder ``load_policy`` reads.

    ``cfg`` is the whole ``Config`` (its ``model``, ``pretrain``, ``protocol`` and ``seed`` are used); the
    pretraining fields it leaves unset take the schedule of the world's size (``PretrainConfig.for_world``), and
    the config written into ``out_dir`` says the values used. A run interrupted after a checkpoint resumes from
    it when called again with the same config and folders.
    """
    import torch

    from mmsearch_r1.config import save_config
    from mmsearch_r1.models.policy import build_tiny_policy, load_policy, require_device
    from mmsearch_r1.models.tokenizer import build_tokenizer
    from mmsearch_r1.world.schema import load_world

    # --- setup
    require_device(cfg.pretrain.device, "pretrain.device")
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    world_dir, out = Path(world_dir), Path(out_dir)
    world = load_world(world_dir)
    epochs_from = "set" if cfg.pretrain.epochs is not None else f"the {cfg.pretrain.schedule_for(world.size)} schedule's"
    cfg = with_schedule(cfg, world.size)
    p = cfg.pretrain
    if p.drill_epochs >= p.epochs:
        raise ConfigError(f"pretrain.drill_epochs ({p.drill_epochs}) must be below pretrain.epochs ({p.epochs:g}, {epochs_from}): the first drill_epochs epochs "
                          "hold drills alone, so no protocol demonstration would be trained; lower pretrain.drill_epochs or raise pretrain.epochs.")
    torch.set_num_threads(p.threads)
    samples = read_split(world_dir, "train")
    folder = out / CHECKPOINT
    stamp = fingerprint(cfg, world_dir)
    resume = checkpoint_state(folder, stamp)  # a checkpoint of another run is refused before its folder is written to
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out)
    if (folder / "tokenizer.json").is_file():  # resuming: the very tokenizer the checkpoint was trained with
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    else:
        tokenizer = build_tokenizer(world_texts(world, world_dir), folder, vocab_size=cfg.model.vocab_size)
    policy = build_tiny_policy(cfg.model, tokenizer, seed=cfg.seed)
    toolbox = world_toolbox(world_dir)
    timings["setup"] = time.perf_counter() - clock

    # --- demonstrations
    clock = time.perf_counter()
    schedule = plan(cfg, DemoSource(cfg, world, samples, toolbox, policy), progress)
    timings["demonstrations"] = time.perf_counter() - clock

    # --- training
    clock = time.perf_counter()
    torch.manual_seed(cfg.seed)
    training = train_steps(policy, schedule.batches, cfg, folder, stamp, progress, resume)
    policy.save(out)
    timings["training"] = time.perf_counter() - clock

    summary = {
        "world": str(world_dir), "seed": cfg.seed, "parameters": sum(w.numel() for w in policy.model.parameters()),
        "vocab_size": len(policy.tokenizer), "demonstrations_per_epoch": schedule.demos_per_epoch,
        "action_sequences": schedule.action_counts, "tokens": schedule.tokens, "trained_tokens": schedule.trained_tokens,
        "training": training,
    }
    if report and cfg.pretrain.report_samples:
        from mmsearch_r1.models.report import write_report

        clock = time.perf_counter()
        write_report(load_policy(out, device=cfg.pretrain.device), cfg, world, world_dir, toolbox, out, summary, timings, progress=progress)
    else:
        (out / "pretrain_summary.json").write_text(json.dumps({**summary, "seconds": timings}, indent=1) + "\n")
    return out
