"""Token bookkeeping of an episode with the policy's own processor and chat template.

An episode's tokens are built span by span as it runs: the opening prompt, each sampled assistant turn,
each feedback turn. A given span is the text the chat template adds between what came before and the
next assistant generation prompt, so that the concatenation of spans equals the chat template applied to
the finished messages (test (a)). The chat template writes ``<|im_end|>\\n`` after an assistant turn: the
sampled span ends at ``<|im_end|>``; the ``\\n`` opens the next given span.

Requirement on the chat template: rendering a conversation must be a prefix of rendering the same
conversation with more messages (true of Qwen's ChatML templates); ``EngineError`` says so otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from mmsearch_r1.engines.base import Context, EngineError, GeneratedTurn

if TYPE_CHECKING:
    from PIL import Image

    from mmsearch_r1.trajectory import Message

END_OF_TURN = "<|im_end|>"


@dataclass
class EncodedSpan:
    """Token ids of a given span and the processed images it introduces (one tensor entry per image)."""

    token_ids: list[int]
    pixel_values: list[Any]
    image_grid_thw: list[Any]


class ChatEncoder:
    """Renders messages with the processor's chat template and encodes them, one span at a time."""

    def __init__(self, processor: Any):
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.end_of_turn_id: int = self.tokenizer.convert_tokens_to_ids(END_OF_TURN)
        self.pad_id: int = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.end_of_turn_id
        self.image_token_id: int = processor.image_token_id
        # Special tokens the policy must never sample: image placeholders, chat markers, padding. Sampling
        # one would corrupt the episode (an image pad with no image). Only the end of turn stays allowed.
        special = {i for i, t in self.tokenizer.added_tokens_decoder.items() if t.special}
        self.suppressed_ids: list[int] = sorted(special - {self.end_of_turn_id})

    # --- text ----------------------------------------------------------------------------------------

    def render(self, messages: Sequence["Message"], *, generation_prompt: bool) -> str:
        """The chat template applied to ``messages`` (images as placeholders), as text."""
        if not messages:
            return ""
        chat = [m.to_chat() for m in messages]
        return self.processor.apply_chat_template(chat, tokenize=False, add_generation_prompt=generation_prompt)

    def _suffix(self, before: str, after: str) -> str:
        if not after.startswith(before):
            raise EngineError(
                "the chat template renders a conversation differently once messages are added to it; "
                "use a template where each message's rendering does not depend on later ones (like Qwen's ChatML)."
            )
        return after[len(before):]

    def decode(self, token_ids: Sequence[int]) -> str:
        """The text of sampled ids, exactly as the tokenizer spells it (no space clean-up)."""
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    # --- spans ---------------------------------------------------------------------------------------

    def encode_texts(self, texts: Sequence[str], images: Sequence[Sequence["Image.Image"]]) -> list[EncodedSpan]:
        """Encode chat-template texts in one processor call; ``images[i]`` fills the placeholders of ``texts[i]``."""
        kwargs: dict[str, Any] = {"add_special_tokens": False, "return_tensors": "pt", "padding": True}
        flat = [image for per in images for image in per]
        if flat:
            encoded = self.processor(text=list(texts), images=flat, **kwargs)
            counts = encoded["image_grid_thw"].prod(-1).tolist()
            pixel_values = list(encoded["pixel_values"].split(counts, dim=0))
            grids = list(encoded["image_grid_thw"])
        else:
            encoded = self.tokenizer(list(texts), **kwargs)
            pixel_values, grids = [], []
        spans, first = [], 0
        for row, per in enumerate(images):
            ids = encoded["input_ids"][row][encoded["attention_mask"][row].bool()].tolist()
            spans.append(EncodedSpan(ids, pixel_values[first: first + len(per)], grids[first: first + len(per)]))
            first += len(per)
        return spans

    def encode_text(self, text: str, images: Sequence["Image.Image"] = ()) -> EncodedSpan:
        """Encode chat-template text; each image placeholder in it is expanded for the matching image."""
        return self.encode_texts([text], [images])[0]

    def given_text(self, before: Sequence["Message"], added: Sequence["Message"]) -> str:
        """The text between ``before`` (empty, or ending with a sampled assistant turn) and the next generation prompt.

        ``added`` are the new non-assistant messages. The text ends with the assistant generation prompt
        (``<|im_start|>assistant\\n`` for ChatML).
        """
        full = self.render([*before, *added], generation_prompt=True)
        if not before:
            return full
        prefix = self.render(before, generation_prompt=False)
        cut = prefix.rfind(END_OF_TURN)
        if cut < 0:
            raise EngineError(f"the chat template does not end an assistant turn with {END_OF_TURN}; use a ChatML template.")
        tail = prefix[cut + len(END_OF_TURN):]  # what the template writes after the end-of-turn token
        return tail + self._suffix(prefix, full)

    def given_span(self, before: Sequence["Message"], added: Sequence["Message"], new_images: Sequence["Image.Image"]) -> EncodedSpan:
        """The tokens of ``given_text`` with ``new_images`` (the images ``added`` introduces, in order)."""
        return self.encode_text(self.given_text(before, added), new_images)

    def assistant_span(self, before: Sequence["Message"], text: str) -> list[int]:
        """The canonical ids of an assistant turn with ``text`` after ``before``, through its end-of-turn token."""
        from mmsearch_r1.trajectory import Message

        prefix = self.render(before, generation_prompt=True)
        full = self.render([*before, Message("assistant", [text])], generation_prompt=False)
        delta = self._suffix(prefix, full)
        cut = delta.rfind(END_OF_TURN)
        if cut < 0:
            raise EngineError(f"the chat template does not end an assistant turn with {END_OF_TURN}; use a ChatML template.")
        return self.encode_text(delta[: cut + len(END_OF_TURN)]).token_ids


def sampled_turn(encoder: ChatEncoder, context: Context, ids: list[int], logprobs: list[float], *, stopped: bool, canonical_tokens: bool) -> GeneratedTurn:
    """The span of a sampled turn: its ids through the end of turn (appended, unmasked, when cut at the limit).

    ``ids`` and ``logprobs`` are what the backend sampled, cut after the end-of-turn token when ``stopped``.
    With ``canonical_tokens``, a turn whose ids differ from the tokenizer's own encoding of its text is stored
    as that encoding (``retokenized``; its log-probs are rescored by the engine).
    """
    eot = encoder.end_of_turn_id
    text = encoder.decode(ids[:-1] if stopped else ids)
    mask = [1] * len(ids)
    if not stopped:
        ids, logprobs, mask = ids + [eot], logprobs + [0.0], mask + [0]
    turn = GeneratedTurn(text, ids, logprobs, mask, "stop" if stopped else "length", sampled_tokens=sum(mask))
    if canonical_tokens:
        canonical = encoder.assistant_span(context.messages, text)
        if canonical != ids:
            turn.token_ids, turn.retokenized = canonical, True
            turn.loss_mask = [1] * (len(canonical) - 1) + [1 if stopped else 0]
    return turn
