"""The trajectory: one record per episode, made by rollout and read by reward, trainer and evaluator.

There is no prompt/completion split. A multi-turn episode interleaves spans the policy sampled with spans it
was given (prompt, feedback turns, image placeholders); ``loss_mask`` says which is which, token by token:
1 exactly on tokens the policy sampled, each turn's end-of-turn token included, 0 elsewhere.
``logprobs`` is aligned with ``token_ids`` (behaviour-policy log-probability where ``loss_mask`` is 1, 0.0
elsewhere). Images are in context order: the question image first, then search thumbnails.

Serialized as one JSON object per line; images are written once each as PNG files named by content hash and
referenced by relative path.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

if TYPE_CHECKING:
    from PIL import Image

    from mmsearch_r1.reward import RewardBreakdown


@dataclass(frozen=True)
class ImageRef:
    """A place in a message where an image goes; ``index`` points into the trajectory's image list."""

    index: int


@dataclass
class Message:
    """One chat message as the model saw it: text pieces and image places, in order."""

    role: str
    content: list[str | ImageRef] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The message's text without its images."""
        return "".join(part for part in self.content if isinstance(part, str))

    def to_chat(self) -> dict:
        """The Hugging Face chat-template form: ``{"role", "content": [{"type": "image"}|{"type": "text"}]}``."""
        parts = [{"type": "image"} if isinstance(p, ImageRef) else {"type": "text", "text": p} for p in self.content]
        return {"role": self.role, "content": parts}

    def to_json(self) -> dict:
        parts = [{"image": p.index} if isinstance(p, ImageRef) else p for p in self.content]
        return {"role": self.role, "content": parts}

    @classmethod
    def from_json(cls, data: dict) -> "Message":
        parts = [ImageRef(p["image"]) if isinstance(p, dict) else p for p in data["content"]]
        return cls(role=data["role"], content=parts)


@dataclass
class Trajectory:
    """One finished episode: everything the trainer and the evaluator need, nothing model-specific."""

    sample_id: str
    group_id: str
    messages: list[Message]
    token_ids: list[int]
    loss_mask: list[int]
    logprobs: list[float]
    images: list["Image.Image"]
    actions: list[str]  # per assistant turn: answer | image_search | text_search | invalid
    end_reason: str  # answer | invalid | limit
    image_searches: int = 0
    text_searches: int = 0
    tool_failures: int = 0
    final_answer: str | None = None
    gold_answers: list[str] = field(default_factory=list)
    reward: "RewardBreakdown | None" = None
    meta: dict = field(default_factory=dict)  # sample labels (category, search_need, data_source), timings

    def __post_init__(self) -> None:
        if not (len(self.token_ids) == len(self.loss_mask) == len(self.logprobs)):
            raise ValueError(
                f"trajectory {self.sample_id}: token_ids ({len(self.token_ids)}), loss_mask ({len(self.loss_mask)}) "
                f"and logprobs ({len(self.logprobs)}) must have equal lengths."
            )

    @property
    def assistant_turns(self) -> list[str]:
        """The assistant turns' texts in order: what the reward scores."""
        return [m.text for m in self.messages if m.role == "assistant"]

    @property
    def searches(self) -> int:
        return self.image_searches + self.text_searches

    # --- serialization -------------------------------------------------------------------------------

    def to_json(self, image_dir: str | Path) -> dict:
        """A JSON-ready dict; images are written to ``image_dir`` (once per distinct image) and referenced."""
        image_dir = Path(image_dir)
        data = {k: v for k, v in self.__dict__.items() if k not in ("messages", "images", "reward")}
        data["messages"] = [m.to_json() for m in self.messages]
        data["images"] = [save_image(img, image_dir) for img in self.images]
        data["reward"] = asdict(self.reward) if self.reward is not None else None
        return data

    @classmethod
    def from_json(cls, data: dict, image_dir: str | Path) -> "Trajectory":
        from PIL import Image

        from mmsearch_r1.reward import RewardBreakdown

        data = dict(data)
        data["messages"] = [Message.from_json(m) for m in data["messages"]]
        data["images"] = [Image.open(Path(image_dir) / name).convert("RGB") for name in data["images"]]
        data["reward"] = RewardBreakdown(**data["reward"]) if data.get("reward") else None
        return cls(**data)


def save_image(image: "Image.Image", image_dir: Path) -> str:
    """Write ``image`` as PNG named by its content hash (skipping it if present); return the file name."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    payload = buffer.getvalue()
    name = hashlib.sha256(payload).hexdigest()[:24] + ".png"
    target = image_dir / name
    if not target.exists():
        image_dir.mkdir(parents=True, exist_ok=True)
        target.write_bytes(payload)
    return name


def write_jsonl(trajectories: Iterable[Trajectory], path: str | Path, *, append: bool = False) -> None:
    """Write trajectories as JSON lines; images go to ``<path stem>_images/`` beside the file."""
    path = Path(path)
    image_dir = path.parent / f"{path.stem}_images"
    with path.open("a" if append else "w") as handle:
        for trajectory in trajectories:
            handle.write(json.dumps(trajectory.to_json(image_dir)) + "\n")


def read_jsonl(path: str | Path) -> Iterator[Trajectory]:
    """Read trajectories written by ``write_jsonl``."""
    path = Path(path)
    image_dir = path.parent / f"{path.stem}_images"
    with path.open() as handle:
        for line in handle:
            if line.strip():
                yield Trajectory.from_json(json.loads(line), image_dir)
