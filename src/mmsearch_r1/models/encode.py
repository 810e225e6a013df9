"""Turn a demonstration into model inputs: token ids, a loss mask on the trained assistant pieces, pixels.

The conversation is rendered once with the policy's chat template, each ``<|image_pad|>`` is expanded to the
image's number of visual tokens (what the processor does), and the whole text is tokenized with character
offsets. A token is trained when it lies entirely inside a trained piece of an assistant turn, or is the
``<|im_end|>`` that closes an assistant turn (unless the demonstration says not to); everything else (prompt, feedback turns, image tokens, pieces
the model cannot know) has mask 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mmsearch_r1.errors import DataError

if TYPE_CHECKING:
    import torch

    from mmsearch_r1.models.demos import Demonstration
    from mmsearch_r1.models.policy import Policy

IMAGE_PAD = "<|image_pad|>"
END_OF_TURN = "<|im_end|>"


@dataclass
class Encoded:
    """One demonstration as tensors' raw material: ``token_ids`` and ``loss_mask`` have equal lengths."""

    sample_id: str
    token_ids: list[int]
    loss_mask: list[int]
    pixel_values: list["torch.Tensor"]  # per image in context order: [patches_i, patch_dim]
    image_grid_thw: list["torch.Tensor"]  # per image: [3]

    def __len__(self) -> int:
        return len(self.token_ids)


def trained_spans(text: str, demo: "Demonstration") -> list[tuple[int, int]]:
    """Character spans of ``text`` that count in the loss: trained pieces and each assistant turn's end token."""
    spans: list[tuple[int, int]] = []
    cursor = 0
    for pieces in demo.turns:
        content = "".join(p.text for p in pieces)
        start = text.find(content, cursor)
        if start < 0:
            raise DataError(f"demonstration {demo.sample_id}: an assistant turn is missing from the rendered chat; the chat template changes message text.")
        position = start
        for piece in pieces:
            if piece.trained and piece.text:
                if spans and spans[-1][1] == position:
                    spans[-1] = (spans[-1][0], position + len(piece.text))  # merge neighbours: BPE may join them
                else:
                    spans.append((position, position + len(piece.text)))
            position += len(piece.text)
        end = text.find(END_OF_TURN, position)
        if end != position:
            raise DataError(f"demonstration {demo.sample_id}: the chat template does not close an assistant turn with {END_OF_TURN}.")
        if demo.train_end_of_turn:
            spans.append((end, end + len(END_OF_TURN)))
        cursor = end
    return spans


def mask_from_offsets(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    """1 for each token whose character range lies inside one span, else 0.

    >>> mask_from_offsets([(0, 2), (2, 5), (5, 9)], [(2, 9)])
    [0, 1, 1]
    >>> mask_from_offsets([(0, 3), (3, 6)], [(1, 6)])
    [0, 1]
    """
    mask, j = [], 0
    for start, end in offsets:
        while j < len(spans) and spans[j][1] <= start:
            j += 1
        inside = j < len(spans) and spans[j][0] <= start and end <= spans[j][1] and end > start
        mask.append(int(inside))
    return mask


class PixelCache:
    """Processed pixels per image object, so an image shared by many demonstrations is processed once."""

    def __init__(self, image_processor) -> None:
        self.image_processor = image_processor
        self._store: dict[int, tuple[object, "torch.Tensor", "torch.Tensor"]] = {}

    def __call__(self, image) -> tuple["torch.Tensor", "torch.Tensor"]:
        key = id(image)
        if key not in self._store:  # the image is kept in the entry, so its id stays unique
            out = self.image_processor(images=[image], return_tensors="pt")
            self._store[key] = (image, out["pixel_values"], out["image_grid_thw"][0])
        return self._store[key][1], self._store[key][2]


def encode_demonstration(demo: "Demonstration", policy: "Policy", pixels: PixelCache | None = None) -> Encoded:
    """Render, expand image tokens, tokenize with offsets, and mask (see the module docstring)."""
    tokenizer, image_processor = policy.tokenizer, policy.image_processor
    pixels = pixels or PixelCache(image_processor)
    text = tokenizer.apply_chat_template([m.to_chat() for m in demo.messages], tokenize=False)
    processed = [pixels(image) for image in demo.images]
    parts = text.split(IMAGE_PAD)
    if len(parts) - 1 != len(processed):
        raise DataError(f"demonstration {demo.sample_id}: {len(parts) - 1} image places for {len(processed)} images.")
    merge = image_processor.merge_size**2
    text = parts[0] + "".join(IMAGE_PAD * (int(grid.prod()) // merge) + part for (_, grid), part in zip(processed, parts[1:]))
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = mask_from_offsets(encoding["offset_mapping"], trained_spans(text, demo))
    return Encoded(demo.sample_id, list(encoding["input_ids"]), mask, [p for p, _ in processed], [g for _, g in processed])
