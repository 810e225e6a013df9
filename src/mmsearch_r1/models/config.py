"""Config of the policy model (tiny or real Qwen2.5-VL) and of its supervised pretraining."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from mmsearch_r1.config import DEVICE_PATTERN, Section


class ModelConfig(Section):
    """The policy model: a checkpoint folder, or the sizes of a tiny model built from scratch."""

    path: Path | None = Field(None, description="Checkpoint folder in Hugging Face layout (tiny or real Qwen2.5-VL).")
    vocab_size: int = Field(2048, ge=300, le=200_000, description="Target vocabulary size of the tiny model's tokenizer.")
    hidden_size: int = Field(128, ge=16, le=8192, description="Width of the tiny language model.")
    num_layers: int = Field(3, ge=1, le=64, description="Decoder layers of the tiny language model (3 read the results better than 4, and train 1.24x faster; docs/model.md).")
    num_heads: int = Field(4, ge=1, le=64, description="Attention heads of the tiny language model.")
    num_kv_heads: int = Field(2, ge=1, le=64, description="Key/value heads (grouped-query attention); divides num_heads.")
    intermediate_size: int = Field(384, ge=16, le=65536, description="MLP width of the tiny language model.")
    vision_hidden_size: int = Field(64, ge=16, le=4096, description="Width of the tiny vision encoder.")
    vision_depth: int = Field(2, ge=1, le=48, description="Blocks of the tiny vision encoder.")
    vision_heads: int = Field(2, ge=1, le=32, description="Attention heads of the tiny vision encoder.")
    vision_intermediate_size: int = Field(128, ge=16, le=16384, description="MLP width of the tiny vision encoder.")
    patch_size: int = Field(14, ge=2, le=32, description="Vision patch side in pixels (Qwen2.5-VL uses 14).")
    image_size: int = Field(56, ge=28, le=448, description="Every image is resized to about this many pixels a side (56 -> 4 visual tokens).")
    max_position_embeddings: int = Field(4096, ge=128, le=131072, description="Longest context of the tiny model.")
    init_std: float = Field(0.02, gt=0.0, le=1.0, description="Std of the tiny model's initial weights and embeddings.")
    tie_word_embeddings: bool = Field(True, description="Share the input embedding and the output head of the tiny model.")


# What the demonstrations say, in the code that writes them (models/demos.py); part of the fingerprints that
# decide whether a pretraining is resumed or a demo stage reused, so that a pretrained model made by older
# code is made again. Raise it whenever the demonstrations' text or loss mask changes, or the text every
# tokenizer is trained on (models/tokenizer.py, ``_BASE_TEXT``).
DEMONSTRATIONS_VERSION = 2  # 2: the reasoning ends with the action it takes

COPY_WORDS = 12  # words in one copy drill (``PretrainConfig.copy_drills``)

# The schedule of each world size: the values of the pretraining fields left unset (None), by the size of the
# world pretrained on (``PretrainConfig.schedule`` picks another). The default world's is the recipe with more
# reading, copy drills in every epoch and slips; the small world's fits that world's budget (build and pretraining in
# 90 s on 2 CPU cores, for tests and a first look): it teaches the knowledge groups but not reading, and neither
# copy drills nor slips changed that (docs/model.md, "Schedules", "Copy drills", "Slips and copy drills in every epoch").
SCHEDULES: dict[str, dict[str, float | int]] = {
    "default": {"epochs": 10.0, "protocol_demos": 450, "reading_drills": 320, "copy_drills": 400, "copy_drills_later": 400, "slips": 0.15},
    "small": {"epochs": 7.0, "protocol_demos": 200, "reading_drills": 80, "copy_drills": 0, "copy_drills_later": 0, "slips": 0.0},
}


def _on_each(key: str) -> str:
    """A schedule field's value on each world size, for its description: ``10 on the default world, 7 on the small``."""
    return ", ".join(f"{values[key]:g} on the {size} world" for size, values in SCHEDULES.items())


class PretrainConfig(Section):
    """Supervised pretraining that gives the tiny model partial knowledge and the protocol."""

    # How a run goes, not what it makes: left out of the fingerprints that decide whether to resume or redo it.
    # Threads, device and head_on_loss_only change the rounding, not the run's schedule: a run interrupted with one
    # value resumes with another.
    RUN_ONLY: ClassVar[frozenset[str]] = frozenset({"threads", "device", "head_on_loss_only", "report_samples", "checkpoint_every"})
    ADDED_LATER: ClassVar[dict[str, object]] = {"name_before_query": False, "direct_drill_share": 0.0, "schedule": "auto", "copy_drills": 0, "copy_drills_later": 0, "slips": 0.0}  # see config.stamp_settings

    schedule: Literal["auto", "small", "default"] = Field("auto", description="Whose schedule fills the fields left unset (epochs, protocol_demos, reading_drills, copy_drills, copy_drills_later, slips): auto, that of the world's size; small fits the small world's 90-second budget and does not teach reading; default is the recipe that does (docs/model.md, \"Schedules\").")

    lr: float = Field(1e-3, gt=0, le=1, description="Peak learning rate (3e-3 is too high for the tiny model: facts stop being memorised).")
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0, description="Final learning rate as a fraction of the peak (cosine decay).")
    warmup_steps: int = Field(30, ge=0, le=100_000, description="Linear learning-rate warm-up steps.")
    weight_decay: float = Field(0.01, ge=0.0, le=1.0, description="AdamW weight decay.")
    drill_epochs: int = Field(4, ge=0, le=1000, description="First epochs with the drills alone (a warm-up on short, easy questions), counted in epochs.")
    epochs: float | None = Field(None, gt=0.0, le=1000.0, description=f"Passes over the demonstration set; None: the schedule's ({_on_each('epochs')}).")
    batch_tokens: int = Field(768, ge=64, le=1_000_000, description="Tokens (padding included) in one optimizer step.")
    protocol_demos: int | None = Field(None, ge=1, le=1_000_000, description=f"Protocol demonstrations per epoch, on training questions drawn in turn (the protocol is the same in every world); None: the schedule's ({_on_each('protocol_demos')}).")
    direct_prob: float = Field(0.3, ge=0.0, le=1.0, description="Chance a demonstration answers at once, independent of need.")
    direct_spread: float = Field(0.25, ge=0.0, le=1.0, description="Each entity's chance to answer at once is direct_prob moved by up to this either way; every knowledge group gets the same chances (independent of need).")
    image_first_prob: float = Field(0.5, ge=0.0, le=1.0, description="Chance a searching demonstration starts with image search.")
    follow_up_prob: float = Field(0.5, ge=0.0, le=1.0, description="Chance an image search is followed by a text search.")
    name_before_query: bool = Field(True, description="A searching demonstration on an entity the model cannot recognise starts with image search (follow_up_prob still decides whether a text search follows): a query needs the entity's name, and only the image results give it. Whether to search stays random.")
    fitting_prob: float = Field(0.0, ge=0.0, le=1.0, description="Chance a searching demonstration of a question that needs search makes exactly the searches it needs (whether to search stays random).")
    direct_share: float = Field(0.1, ge=0.0, le=1.0, description="Share of protocol demonstrations in the direct workflow (no tools offered).")
    rag_share: float = Field(0.1, ge=0.0, le=1.0, description="Share of protocol demonstrations in the rag workflow (image results given, then a query).")
    sight_drills: int = Field(48, ge=0, le=256, description="Fresh renderings of each sight-group entity drilled per epoch (the model names it).")
    unrecognised_drills: int = Field(6, ge=0, le=256, description="Fresh renderings of each other entity drilled per epoch (the model says it does not recognise it).")
    fact_drills: int = Field(16, ge=0, le=256, description="Times each fact of a fact-group entity is drilled per epoch, asked by name.")
    reading_drills: int | None = Field(None, ge=0, le=1_000_000, description=f"Reading drills per epoch, on the facts of every entity in turn: text results stating a made-up value, then that value; None: the schedule's ({_on_each('reading_drills')}).")
    copy_drills: int | None = Field(None, ge=0, le=1_000_000, description=f"Copy drills in each warm-up epoch (the first drill_epochs): {COPY_WORDS} of the world's answer words, then the same words again, all trained; dense practice of the copying that reading results takes (docs/model.md, \"Copy drills\"); None: the schedule's ({_on_each('copy_drills')}).")
    copy_drills_later: int | None = Field(None, ge=0, le=1_000_000, description=f"Copy drills in each epoch after the warm-up, next to the protocol demonstrations (copy_drills counts those of the warm-up): the copying keeps up while the model learns the episodes (docs/model.md, \"Slips and copy drills in every epoch\"); None: the schedule's ({_on_each('copy_drills_later')}).")
    naming_drills: int = Field(0, ge=0, le=1_000_000, description="Name-reading drills per epoch: image results on an entity the model cannot recognise whose titles name one of those entities drawn at random, then that name and a query with it (docs/model.md, \"Reading names\").")
    slips: float | None = Field(None, ge=0.0, le=1.0, description=f"Share of the protocol demonstrations that write a name (after image results, or in a text query) that write a wrong word there instead, left out of the loss, and go on from it in the format: practice in staying in the format after a slip of the kind sampling at temperature 1 makes (docs/model.md, \"Slips and copy drills in every epoch\"); None: the schedule's ({_on_each('slips')}).")
    refuse_unknown: bool = Field(True, description="A protocol demonstration that answers at once a fact the model cannot know answers with the refusal the prompt asks for, trained, instead of the true fact left out of the loss (docs/model.md, \"Where format-valid is lost\").")
    made_up_results: bool = Field(True, description="Protocol demonstrations' text results state made-up values (read and answered): they teach reading, not facts.")
    swapped_names: float = Field(0.0, ge=0.0, le=1.0, description="Share of protocol demonstrations with an image search, on an entity the model cannot recognise, whose results give it another such entity's name (read and followed): naming it then takes reading the title (docs/model.md, \"Reading names\").")
    direct_drill_share: float = Field(0.5, ge=0.0, le=1.0, description="Share of the drills asked in the protocol's opening (taken from drill_context_share's) that use the direct workflow's prompt (no tools), where the choice to answer is trained too.")
    drill_context_share: float = Field(0.15, ge=0.0, le=1.0, description="Share of drills asked one per chat in the protocol's real opening turn.")
    drill_size: int = Field(1, ge=1, le=256, description="Knowledge questions per bare drill chat (1 learns fastest per token: packed chats make the model look past the right image).")
    grad_clip: float = Field(1.0, gt=0.0, le=100.0, description="Gradient norm clip.")
    checkpoint_every: int = Field(200, ge=1, le=1_000_000, description="Optimizer steps between resumable checkpoints.")
    report_samples: int = Field(64, ge=0, le=100_000, description="Questions per knowledge group for the report (0 skips it).")
    report_max_new_tokens: int = Field(48, ge=8, le=4096, description="Most tokens per turn when the report samples the model.")
    threads: int = Field(2, ge=1, le=256, description="CPU threads torch may use (use 1 when another job shares a 2-core machine); threads change the rounding, and so the model (docs/model.md).")
    head_on_loss_only: bool = Field(True, description="Run the output head only at the positions in the loss (the same loss in fewer operations: training steps 1.08-1.18x faster on a CPU, whole runs up to 1.09x, docs/model.md); like threads it changes the rounding, and so the model: the documented configs set false, as their models were trained.")
    device: str = Field("cpu", pattern=DEVICE_PATTERN, description="Where the model trains and the report samples it: cpu or cuda[:i].")

    def schedule_for(self, size: str) -> str:
        """The name of the schedule that fills the unset fields on a world of ``size``: ``size``, unless ``schedule`` picks another."""
        return size if self.schedule == "auto" else self.schedule

    def for_world(self, size: str) -> "PretrainConfig":
        """This config with each field left unset taken from the schedule of ``size`` (the world's size), or of
        ``schedule`` when that is not ``auto``; fields set keep their values, and ``schedule`` is ``auto`` again.

        >>> p = PretrainConfig(epochs=12).for_world("small")
        >>> p.epochs, p.protocol_demos == SCHEDULES["small"]["protocol_demos"], PretrainConfig(schedule="default").for_world("small").epochs
        (12.0, True, 10.0)
        >>> PretrainConfig(schedule="default").for_world("small") == PretrainConfig(**SCHEDULES["default"]).for_world("small")
        True
        """
        schedule = SCHEDULES[self.schedule_for(size)]
        filled = {key: value for key, value in schedule.items() if getattr(self, key) is None}
        # once filled, the values say it all: the same values stamp the same, whichever schedule gave them
        return self.model_validate({**self.model_dump(), **filled, "schedule": "auto"})
