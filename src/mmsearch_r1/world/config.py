"""Config of the demo world generator."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mmsearch_r1.config import Section

# Presets per size; a field left at None in ``WorldConfig`` takes the preset of the chosen size.
SIZE_PRESETS: dict[str, dict[str, int]] = {
    "small": {"entities": 20, "cities": 6, "train_questions_per_fact": 3},
    "default": {"entities": 48, "cities": 10, "train_questions_per_fact": 5},
}


class WorldConfig(Section):
    """The procedurally generated demo world."""

    size: Literal["small", "default"] = Field("default", description="small: 20 entities (the demo's world and the tests'; built in seconds); default: 48 entities, what the default pretraining teaches the tiny model in 5-6 minutes on 2 CPU cores (docs/model.md).")
    entities: int | None = Field(None, ge=4, le=132, description="Number of entities (split evenly over the 4 knowledge groups); None: the size's preset.")
    cities: int | None = Field(None, ge=2, le=40, description="Number of made-up home cities to draw from; None: the size's preset.")
    min_facts: int = Field(3, ge=1, le=7, description="Fewest attributes an entity has.")
    max_facts: int = Field(5, ge=1, le=7, description="Most attributes an entity has.")
    train_questions_per_fact: int | None = Field(None, ge=1, le=50, description="Training questions (renderings) per fact; None: the size's preset.")
    test_questions_per_fact: int = Field(1, ge=0, le=20, description="In-domain test questions per fact.")
    heldout_questions_per_fact: int = Field(1, ge=0, le=20, description="Held-out questions per fact (new renderings, held-out templates).")
    thumbnails_per_entity: int = Field(2, ge=1, le=8, description="Thumbnails per entity in the image index (first: profile page, second: chronicle).")
    image_size: int = Field(84, ge=28, le=448, description="Side of question images, in pixels.")
    thumbnail_size: int = Field(56, ge=28, le=448, description="Side of thumbnails, in pixels.")
    max_rotation: float = Field(20.0, ge=0.0, le=90.0, description="Largest rotation of an emblem in a rendering, in degrees.")
    max_shift: float = Field(0.08, ge=0.0, le=0.3, description="Largest shift of an emblem, as a fraction of the image side.")
    noise_std: float = Field(6.0, ge=0.0, le=40.0, description="Standard deviation of the pixel noise (0-255 scale).")
    build_indexes: bool = Field(True, description="Build text_index/ and image_index/ inside the world folder.")

    def preset(self, key: str) -> int:
        """The value of a size-dependent field: the field itself when set, else the size's preset."""
        value = getattr(self, key)
        return SIZE_PRESETS[self.size][key] if value is None else value
