"""An engine that writes turns from a script instead of a model: for tests and for checking a pipeline.

``ScriptedEngine(reply)`` calls ``reply(context)`` for every context and returns the text as the turn.
Given a ``ChatEncoder`` it also returns the turn's canonical token ids (through the end-of-turn token) with
log-probability 0.0, so that rollout's token bookkeeping can be checked against a real processor.

>>> from mmsearch_r1.engines.base import Context
>>> from mmsearch_r1.engines.config import SamplingConfig
>>> engine = ScriptedEngine(lambda context: f"<reason>turn {len(context.messages)}</reason><answer>x</answer>")
>>> engine.generate([Context([], [])], SamplingConfig())[0].text
'<reason>turn 0</reason><answer>x</answer>'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from mmsearch_r1.engines.base import Context, Engine, GeneratedTurn

if TYPE_CHECKING:
    from mmsearch_r1.engines.chat import ChatEncoder
    from mmsearch_r1.engines.config import SamplingConfig


class ScriptedEngine(Engine):
    """Turns from a function of the context; ``calls`` counts ``generate`` calls, ``batch_sizes`` their sizes."""

    def __init__(self, reply: Callable[[Context], str], encoder: "ChatEncoder | None" = None):
        self.reply = reply
        self.encoder = encoder
        self.calls = 0
        self.batch_sizes: list[int] = []

    def generate(self, contexts: list[Context], sampling: "SamplingConfig", *, seed: int | None = None) -> list[GeneratedTurn]:
        self.calls += 1
        self.batch_sizes.append(len(contexts))
        turns = []
        for context in contexts:
            text = self.reply(context)
            if self.encoder is None:
                turns.append(GeneratedTurn(text))
                continue
            ids = self.encoder.assistant_span(context.messages, text)
            turns.append(GeneratedTurn(text, ids, [0.0] * len(ids), [1] * len(ids)))
        return turns
