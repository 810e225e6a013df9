"""The VQA sample: one image, one question, the gold answer and its aliases, and search labels."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from PIL import Image

Category = Literal["search_free", "search_required"]
SearchNeed = Literal["none", "image", "text", "image_text"]
CATEGORIES = ("search_free", "search_required")
SEARCH_NEEDS = ("none", "image", "text", "image_text")


@dataclass
class VQASample:
    """A visual question. ``answers[0]`` is the ground truth; the rest are accepted aliases.

    ``image_bytes`` holds the encoded image (JPEG or PNG) as stored in Parquet; ``image`` decodes it once.
    ``category`` is the coarse search label of the published data (``search_free``/``search_required``);
    ``search_need`` the finer one (``none``/``image``/``text``/``image_text``) where it is known.
    """

    id: str
    question: str
    image_bytes: bytes
    answers: list[str]
    data_source: str = "unknown"
    category: Category | None = None
    search_need: SearchNeed | None = None
    image_url: str | None = None
    extra: dict = field(default_factory=dict)

    @cached_property
    def image(self) -> "Image.Image":
        from PIL import Image

        return Image.open(io.BytesIO(self.image_bytes)).convert("RGB")

    @property
    def ground_truth(self) -> str:
        return self.answers[0]
