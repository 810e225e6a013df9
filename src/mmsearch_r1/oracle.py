"""The oracle: make exactly the searches a question needs, then let the model answer from the results.

It is the ceiling for search efficiency in the demo: a question whose ``search_need`` is ``none`` gets no
search, ``image`` one image search, ``text`` one text search naming the entity, ``image_text`` both. The
searches are scripted turns; the answer turn is the model's own, sampled again (up to ``answer_tries`` times,
at temperature 1 if the first try was greedy) while it is not an answer, so that the oracle answers after
exactly the searches it planned. ``OracleEngine`` wraps any engine, so the oracle runs through the ordinary
rollout and evaluation (as the ``on_demand`` workflow) and its trajectories keep exact token bookkeeping.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Mapping, Sequence

from mmsearch_r1.engines.base import Context, Engine, GeneratedTurn

if TYPE_CHECKING:
    from PIL import Image

    from mmsearch_r1.data import VQASample
    from mmsearch_r1.engines.config import SamplingConfig
    from mmsearch_r1.world.schema import World

NEED_ACTIONS: dict[str, tuple[str, ...]] = {
    "none": ("answer",),
    "image": ("image_search", "answer"),
    "text": ("text_search", "answer"),
    "image_text": ("image_search", "text_search", "answer"),
}


def image_key(image: "Image.Image") -> str:
    """A key for the question image of a context (its pixels, not its object identity)."""
    return hashlib.sha1(image.tobytes() + repr((image.size, image.mode)).encode()).hexdigest()


class OracleEngine(Engine):
    """Writes the scripted search turns of each question, then asks ``model`` for the rest.

    ``plans`` maps a question image's ``image_key`` to the texts of its scripted turns, in order; a context
    whose question image has no plan, or whose plan is used up, goes to the model. All contexts the model
    serves in a call go to it in one batch.
    """

    def __init__(self, model: Engine, plans: Mapping[str, Sequence[str]], answer_tries: int = 8):
        self.model = model
        self.plans = dict(plans)
        self.encoder = model.encoder
        self.answer_tries = answer_tries

    def scripted_turn(self, context: Context) -> str | None:
        plan = self.plans.get(image_key(context.images[0])) if context.images else None
        done = sum(m.role == "assistant" for m in context.messages)
        return plan[done] if plan is not None and done < len(plan) else None

    def generate(self, contexts: list[Context], sampling: "SamplingConfig", *, seed: int | None = None) -> list[GeneratedTurn]:
        scripted = [self.scripted_turn(c) for c in contexts]
        to_model = [c for c, text in zip(contexts, scripted) if text is None]
        generated = iter(self._answers(to_model, sampling, seed))
        turns = []
        for context, text in zip(contexts, scripted):
            if text is None:
                turns.append(next(generated))
            elif self.encoder is None:
                turns.append(GeneratedTurn(text))
            else:
                ids = self.encoder.assistant_span(context.messages, text)
                turns.append(GeneratedTurn(text, ids, [0.0] * len(ids), [1] * len(ids)))
        return turns

    def _answers(self, contexts: list[Context], sampling: "SamplingConfig", seed: int | None) -> list[GeneratedTurn]:
        """The model's turns; a turn that is not an answer is sampled again, up to ``answer_tries`` in all."""
        from mmsearch_r1.protocol import turn_shape

        turns = self.model.generate(contexts, sampling, seed=seed) if contexts else []
        if sampling.temperature <= 0:  # greedy would repeat the same turn: later tries sample at temperature 1
            sampling = sampling.model_copy(update={"temperature": 1.0})
        for attempt in range(1, self.answer_tries):
            again = [i for i, turn in enumerate(turns) if turn_shape(turn.text) != "answer"]
            if not again:
                break
            retry_seed = None if seed is None else seed * 1_000 + attempt
            for i, turn in zip(again, self.model.generate([contexts[i] for i in again], sampling, seed=retry_seed)):
                turns[i] = turn
        return turns

    def close(self) -> None:
        self.model.close()


def world_plans(samples: Sequence["VQASample"], world: "World", *, with_answers: bool = False) -> dict[str, list[str]]:
    """The oracle's scripted turns for world questions, written as the pretraining demonstrations write them.

    With ``with_answers`` the plan also holds the correct final answer turn: a teacher, whose trajectories
    are the supervised fine-tuning data of the demo's ``sft`` ablation.
    """
    from mmsearch_r1.models.demos import first_thoughts, naming_turn, reading_turn, results_show, sample_entity

    plans = {}
    for sample in samples:
        entity, attribute = sample_entity(sample, world)
        phrase, fact = world.attribute(attribute).phrase, sample.answers[0]
        turns, head, read = [], first_thoughts(entity.name, entity.known_by_sight, entity.facts_known), False
        for action in NEED_ACTIONS[sample.search_need or "none"][:-1]:
            turns.append(_text(naming_turn(head, entity.name, True, action, phrase=phrase)))
            if action == "image_search":
                head = results_show(entity.name, True, entity.facts_known)
            else:
                read = True
        if with_answers:
            answer = reading_turn(fact, world.attribute(attribute).fact_sentence, True) if read else naming_turn(head, entity.name, True, "answer", fact=fact, knows_fact=True)
            turns.append(_text(answer))
        plans[image_key(sample.image)] = turns
    return plans


def _text(pieces) -> str:
    return "".join(piece.text for piece in pieces)
