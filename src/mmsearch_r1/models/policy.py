"""The policy model: a Qwen2.5-VL (tiny, built from a config, or a real checkpoint) with its processor.

One loader serves both scales. ``load_policy(folder)`` reads a Hugging Face folder: the model weights
(``AutoModelForImageTextToText``), the tokenizer, and the image-processor settings
(``preprocessor_config.json``). The processor is rebuilt in code around the torchvision-free
``Qwen2VLImageProcessorPil``, because ``Qwen2_5_VLProcessor.from_pretrained`` insists on a video
processor, which needs torchvision.

>>> from mmsearch_r1.models import ModelConfig, build_tokenizer, build_tiny_policy   # doctest: +SKIP
>>> policy = build_tiny_policy(ModelConfig(), build_tokenizer(["some world text"]))  # doctest: +SKIP
>>> policy.save("runs/tiny"); load_policy("runs/tiny")                               # doctest: +SKIP
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmsearch_r1.config import DEVICE_PATTERN
from mmsearch_r1.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, ProcessorMixin

    from mmsearch_r1.models.config import ModelConfig

# Settings of preprocessor_config.json that the PIL image processor understands.
_IMAGE_SETTINGS = (
    "min_pixels", "max_pixels", "size", "patch_size", "temporal_patch_size", "merge_size", "image_mean", "image_std",
    "do_resize", "do_rescale", "rescale_factor", "do_normalize", "do_convert_rgb", "resample",
)


@dataclass
class Policy:
    """A multimodal policy: the model and the processor that turns chat messages + images into its inputs."""

    model: "PreTrainedModel"
    processor: "ProcessorMixin"

    @property
    def tokenizer(self) -> "PreTrainedTokenizerBase":
        return self.processor.tokenizer

    @property
    def image_processor(self) -> Any:
        return self.processor.image_processor

    @property
    def eos_token_id(self) -> int:
        """The end-of-turn token (``<|im_end|>``)."""
        return self.tokenizer.convert_tokens_to_ids("<|im_end|>")

    def save(self, out_dir: str | Path) -> Path:
        """Write model, tokenizer, chat template and image-processor settings in Hugging Face layout."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(out))
        self.tokenizer.save_pretrained(str(out))
        self.image_processor.save_pretrained(str(out))
        return out


def build_processor(tokenizer: "PreTrainedTokenizerBase", image_settings: dict | None = None, chat_template: str | None = None) -> "ProcessorMixin":
    """A Qwen2.5-VL processor from a tokenizer and image-processor settings, with no video processor."""
    from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    class ImageOnlyQwenProcessor(Qwen2_5_VLProcessor):
        """Qwen2_5_VLProcessor that accepts ``video_processor=None`` (images only, no torchvision)."""

        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    settings = {k: v for k, v in (image_settings or {}).items() if k in _IMAGE_SETTINGS}
    image_processor = Qwen2VLImageProcessorPil(**settings)
    template = chat_template or getattr(tokenizer, "chat_template", None)
    return ImageOnlyQwenProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=None, chat_template=template)


def tiny_image_settings(cfg: "ModelConfig") -> dict:
    """Image-processor settings that resize every image to about ``image_size``² pixels."""
    pixels = cfg.image_size * cfg.image_size
    return {"min_pixels": pixels, "max_pixels": pixels, "patch_size": cfg.patch_size, "temporal_patch_size": 2, "merge_size": 2}


def _mrope_section(head_dim: int) -> list[int]:
    """Split the rotary half-dimension over (time, height, width) as Qwen2.5-VL does (1/4, 3/8, 3/8).

    >>> _mrope_section(128), _mrope_section(32)
    ([16, 24, 24], [4, 6, 6])
    """
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


def tiny_model_config(cfg: "ModelConfig", tokenizer: "PreTrainedTokenizerBase") -> Any:
    """The ``Qwen2_5_VLConfig`` of the tiny policy, with token ids taken from ``tokenizer``."""
    from transformers import Qwen2_5_VLConfig

    if cfg.hidden_size % cfg.num_heads or cfg.num_heads % cfg.num_kv_heads:
        raise ConfigError(
            f"model.hidden_size ({cfg.hidden_size}) must divide by model.num_heads ({cfg.num_heads}), which must divide by "
            f"model.num_kv_heads ({cfg.num_kv_heads}); pick sizes that divide."
        )
    if cfg.vision_hidden_size % cfg.vision_heads:
        raise ConfigError(f"model.vision_hidden_size ({cfg.vision_hidden_size}) must divide by model.vision_heads ({cfg.vision_heads}).")
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in (
        ("image", "<|image_pad|>"), ("video", "<|video_pad|>"), ("start", "<|vision_start|>"), ("end", "<|vision_end|>"),
        ("eos", "<|im_end|>"), ("pad", "<|endoftext|>"))}
    text = dict(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position_embeddings, initializer_range=cfg.init_std,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": _mrope_section(cfg.hidden_size // cfg.num_heads)},
        bos_token_id=None, eos_token_id=ids["eos"], pad_token_id=ids["pad"], tie_word_embeddings=cfg.tie_word_embeddings,
    )
    vision = dict(
        depth=cfg.vision_depth, hidden_size=cfg.vision_hidden_size, intermediate_size=cfg.vision_intermediate_size,
        num_heads=cfg.vision_heads, patch_size=cfg.patch_size, spatial_merge_size=2, temporal_patch_size=2,
        window_size=cfg.patch_size * 2 * 4, out_hidden_size=cfg.hidden_size, fullatt_block_indexes=[cfg.vision_depth - 1],
        initializer_range=cfg.init_std,
    )
    return Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, image_token_id=ids["image"], video_token_id=ids["video"],
        vision_start_token_id=ids["start"], vision_end_token_id=ids["end"], tie_word_embeddings=cfg.tie_word_embeddings,
    )


def build_tiny_policy(cfg: "ModelConfig", tokenizer: "PreTrainedTokenizerBase", seed: int = 0) -> Policy:
    """A freshly initialised tiny Qwen2.5-VL (weights ~ N(0, init_std²), seeded) and its processor."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    config = tiny_model_config(cfg, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
        with torch.no_grad():  # small-std embeddings matter for exploration (PLATFORM.md)
            model.get_input_embeddings().weight.normal_(0.0, cfg.init_std)
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.eval()
    return Policy(model=model, processor=build_processor(tokenizer, tiny_image_settings(cfg)))


def require_policy_folder(path: str | Path) -> Path:
    """``path`` as a Path, once it holds a checkpoint in Hugging Face layout; else a ConfigError with the fix."""
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise ConfigError(f"policy folder {folder} has no config.json; pass a checkpoint folder in Hugging Face layout (or run `mmsearch-r1 pretrain`).")
    return folder


def require_device(device: str, setting: str = "device") -> str:
    """``device`` itself, once torch can place a model there; else a ConfigError naming ``setting`` and the fix."""
    import torch

    if not re.match(DEVICE_PATTERN, device):
        raise ConfigError(f"{setting} is `{device}`; use cpu, cuda or cuda:<index>.")
    if device == "cpu":
        return device
    if torch.version.cuda is None:
        raise ConfigError(f"{setting} is `{device}`, but torch {torch.__version__} is a CPU-only build; set {setting}=cpu, or install a CUDA build of torch on a machine with a GPU.")
    if not torch.cuda.is_available():
        raise ConfigError(f"{setting} is `{device}`, but torch sees no CUDA GPU here (check the driver and CUDA_VISIBLE_DEVICES); set {setting}=cpu, or run on a machine with a GPU.")
    count, index = torch.cuda.device_count(), int(device.partition(":")[2] or 0)
    if index >= count:
        raise ConfigError(f"{setting} is `{device}`, but this machine has {count} CUDA GPU(s); use cuda:0 to cuda:{count - 1}.")
    return device


def _resolve_dtype(dtype: "str | torch.dtype | None", device: str) -> "torch.dtype | str":
    import torch

    if dtype is None:
        return torch.float32 if device == "cpu" else "auto"
    if isinstance(dtype, str) and dtype != "auto":
        if not hasattr(torch, dtype):
            raise ConfigError(f"dtype `{dtype}` is not a torch dtype; use float32, bfloat16 or float16.")
        return getattr(torch, dtype)
    return dtype


def _chat_template(folder: Path) -> str | None:
    """The chat template a checkpoint ships beside its tokenizer (``.jinja`` or processor ``.json``), if any."""
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text()
    if (folder / "chat_template.json").is_file():
        return json.loads((folder / "chat_template.json").read_text()).get("chat_template")
    return None


def load_policy(path: str | Path, device: str = "cpu", dtype: "str | torch.dtype | None" = None) -> Policy:
    """Load a policy folder in Hugging Face layout: the tiny model or a real Qwen2.5-VL checkpoint.

    ``dtype`` None means float32 on CPU and the checkpoint's own dtype elsewhere.
    """
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    require_device(device, "the policy's device")
    folder = require_policy_folder(path)
    settings_file = folder / "preprocessor_config.json"
    settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForImageTextToText.from_pretrained(str(folder), dtype=_resolve_dtype(dtype, device))
    model.to(device)
    model.eval()
    return Policy(model=model, processor=build_processor(tokenizer, settings, _chat_template(folder)))
