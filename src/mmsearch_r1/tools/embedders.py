"""Image embedders for the local image search: one ABC, a weight-free default and a CLIP/SigLIP one.

``HandcraftedEmbedder`` (the default; no weights, numpy only) concatenates five L2-normalised blocks:

1. **colour**: a hue × brightness histogram of the chromatic pixels plus a brightness histogram of the grey
   ones (HSV space, soft-binned so that a small colour shift moves mass between neighbouring bins rather than
   out of a bin), and the background's share. The background colour is estimated from the border and its
   pixels are left out, so a new background does not move the vector; pixels are also weighted by a
   centred Gaussian window, so the middle of the picture, where the subject usually is, counts most.
2. **gradient orientation**: histograms of unsigned gradient directions, weighted by gradient magnitude, at
   two resolutions (global, so position does not matter; soft-binned, so a small rotation moves little mass).
3. **layout**: a 6 × 6 low-resolution RGB thumbnail, mean-removed: where the colours sit, coarsely.
4. **rings**: the colour histogram of block 1 again within three concentric rings around the centre, so the
   colour of the middle is told apart from the colour of the rim, whatever the rotation.
5. **radial orientation**: per ring, a histogram of each gradient's direction relative to the direction from
   the centre (radial edges of a star versus tangential edges of a disc): shape, independent of rotation.

Blocks 1, 2, 4 and 5 ignore rotation, and 1 and 2 ignore position, so shifts, scale changes and small
rotations barely move them; the blur of block 3 makes it tolerant to small shifts. Limits: it compares
colours and edge statistics, not meaning; two different objects of the same colours and similar shapes
collide; a strong change of lighting or hue breaks the colour blocks; a large rotation (beyond about 20
degrees) degrades it; a background that is not one flat colour (a photo, a gradient, a pattern) is not
recognised as background, and the layout block still sees it. For real photos use ``ClipEmbedder`` with a CLIP or SigLIP model folder.

>>> from PIL import Image
>>> vectors = HandcraftedEmbedder().embed([Image.new("RGB", (40, 30), "red"), Image.new("RGB", (20, 20), "blue")])
>>> vectors.shape, bool(abs((vectors ** 2).sum(1) - 1).max() < 1e-5)
((2, 272), True)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from mmsearch_r1.errors import ConfigError, DataError

if TYPE_CHECKING:
    from PIL import Image

SIDE = 48  # every image is resized to SIDE x SIDE before the handcrafted features
HUE_BINS, VALUE_BINS, GREY_BINS, ORIENTATION_BINS, LAYOUT_SIDE = 12, 2, 4, 12, 6
COLOUR_BINS = HUE_BINS * VALUE_BINS + GREY_BINS + 1  # + the background's share
RING_EDGES = (0.0, 0.18, 0.36, 0.6)  # ring radii, in units of the side, around the centre
RADIAL_BINS = 8
# Relative weight of the colour, gradient, layout, ring-colour and radial-orientation blocks, chosen on
# jittered synthetic drawings (tests/unit/test_tools_image.py draws the same kind).
BLOCK_WEIGHTS = (0.4, 0.3, 0.2, 1.0, 1.0)


class Embedder(ABC):
    """Turns images into L2-normalised vectors; similar images give vectors with a high inner product."""

    dim: int

    @abstractmethod
    def embed(self, images: Sequence["Image.Image"]) -> np.ndarray:
        """Return a float32 array of shape (len(images), dim), each row of unit length."""

    @abstractmethod
    def spec(self) -> dict:
        """What ``embedder_from_spec`` needs to rebuild this embedder (stored in the index's index.json)."""


# --- pure feature functions (numpy arrays in, numpy arrays out) ----------------------------------


def l2_normalize(x: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Rows of ``x`` (n, d) scaled to unit length; all-zero rows stay zero."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def centre_window(side: int, sigma: float = 0.35) -> np.ndarray:
    """A (side, side) Gaussian weight centred on the image, ``sigma`` in units of the side."""
    axis = (np.arange(side) + 0.5) / side - 0.5
    return np.exp(-(axis[:, None] ** 2 + axis[None, :] ** 2) / (2 * sigma**2))


def soft_histograms(values: np.ndarray, weights: np.ndarray, bins: int, circular: bool, groups: np.ndarray | None = None, n_groups: int = 1) -> np.ndarray:
    """Linearly interpolated weighted histograms, one per image and group.

    values, weights: (n, p); groups: ints in [0, n_groups), shaped (n, p) or (p,), or None for one group.
    Returns (n, n_groups, bins). Each value splits its weight between the two nearest bin centres in
    proportion to its distance; with ``circular`` the last bin wraps to the first (for hue and orientation),
    otherwise the ends are clamped. Groups (e.g. the ring a pixel lies in) cost no extra pass over the pixels.
    """
    position = values * bins - 0.5
    low = np.floor(position).astype(np.int64)
    frac = position - low
    high = low + 1
    if circular:
        low, high = low % bins, high % bins
    else:
        low, high = np.clip(low, 0, bins - 1), np.clip(high, 0, bins - 1)
    n = values.shape[0]
    base = (np.arange(n) * n_groups)[:, None]
    if groups is not None:
        base = base + groups
    base = base * bins
    size = n * n_groups * bins
    hist = np.bincount((base + low).ravel(), (weights * (1 - frac)).ravel(), minlength=size)
    hist += np.bincount((base + high).ravel(), (weights * frac).ravel(), minlength=size)
    return hist.reshape(n, n_groups, bins)


def hellinger(hist: np.ndarray) -> np.ndarray:
    """Square root of each histogram (last axis) normalised to sum 1; empty histograms stay zero."""
    return np.sqrt(hist / np.maximum(hist.sum(-1, keepdims=True), 1e-8))


def foreground_weights(rgb: np.ndarray, min_share: float = 0.02) -> np.ndarray:
    """How much each pixel differs from the picture's background colour. rgb: (n, s, s, 3) in [0, 1]; returns (n, s*s) in [0, 1].

    The background colour is the median of a 3-pixel frame along the border; a pixel within 0.06 of it
    (RGB distance) weighs 0, one beyond 0.18 weighs 1, linearly between. A picture with almost nothing
    apart from its border colour (under ``min_share`` of the pixels) keeps weight 1 everywhere.
    """
    n = rgb.shape[0]
    frame = np.concatenate([rgb[:, :3].reshape(n, -1, 3), rgb[:, -3:].reshape(n, -1, 3), rgb[:, :, :3].reshape(n, -1, 3), rgb[:, :, -3:].reshape(n, -1, 3)], axis=1)
    background = np.median(frame, axis=1)
    distance = np.linalg.norm(rgb.reshape(n, -1, 3) - background[:, None, :], axis=2)
    weight = np.clip((distance - 0.06) / 0.12, 0, 1)
    return np.where(weight.mean(axis=1, keepdims=True) >= min_share, weight, 1.0)


def colour_features(hsv: np.ndarray, window: np.ndarray, ring: np.ndarray, n_rings: int, foreground: np.ndarray) -> np.ndarray:
    """hsv: (n, s, s, 3) in [0, 1]; window: (s, s) weights; ring: (s, s) ring index of each pixel, -1 outside;
    foreground: (n, s*s) from ``foreground_weights``.

    Returns (n, 1 + n_rings, COLOUR_BINS): for the whole (windowed) picture and then for each ring, hue
    histograms of the chromatic foreground pixels (dark and bright apart), a brightness histogram of the
    grey foreground ones, and one bin with the background's share, Hellinger-mapped. The background's
    colour never enters, only how much of each ring it covers (which says something about shape).
    """
    n = hsv.shape[0]
    hue, sat, val = (hsv[..., c].reshape(n, -1) for c in range(3))
    chroma = np.clip((sat - 0.12) / 0.3, 0, 1) * np.clip(val / 0.25, 0, 1)
    bright = (val >= 0.55).astype(np.int64)
    val = np.clip(val, 0, 0.999)
    inside, ring_id = (ring >= 0).reshape(1, -1).astype(np.float64), np.maximum(ring, 0).reshape(1, -1)
    w = window.reshape(1, -1)
    whole_hue = soft_histograms(hue, w * foreground * chroma, HUE_BINS, True, bright, 2).reshape(n, 1, 2 * HUE_BINS)
    whole_grey = soft_histograms(val, w * foreground * (1 - chroma), GREY_BINS, False)
    whole_back = (w * (1 - foreground)).sum(axis=1).reshape(n, 1, 1)
    ring_hue = soft_histograms(hue, inside * foreground * chroma, HUE_BINS, True, ring_id * 2 + bright, 2 * n_rings).reshape(n, n_rings, 2 * HUE_BINS)
    ring_grey = soft_histograms(val, inside * foreground * (1 - chroma), GREY_BINS, False, ring_id, n_rings)
    ring_back = soft_histograms(np.zeros_like(val), inside * (1 - foreground), 1, False, ring_id, n_rings)
    whole = np.concatenate([whole_hue, whole_grey, whole_back], axis=2)
    rings = np.concatenate([ring_hue, ring_grey, ring_back], axis=2)
    return hellinger(np.concatenate([whole, rings], axis=1))


def gradients(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Central differences of (n, s, s) images, zero on the one-pixel border: (gx, gy), each (n, s, s)."""
    gx, gy = np.zeros_like(grey), np.zeros_like(grey)
    gx[:, 1:-1, 1:-1] = grey[:, 1:-1, 2:] - grey[:, 1:-1, :-2]
    gy[:, 1:-1, 1:-1] = grey[:, 2:, 1:-1] - grey[:, :-2, 1:-1]
    return gx, gy


def orientation_features(grey: np.ndarray) -> np.ndarray:
    """grey: (n, s, s) in [0, 1]. Unsigned gradient-orientation histograms at full and half resolution: (n, 2 * ORIENTATION_BINS)."""
    n, out = grey.shape[0], []
    for level in (grey, 0.25 * (grey[:, ::2, ::2] + grey[:, 1::2, ::2] + grey[:, ::2, 1::2] + grey[:, 1::2, 1::2])):
        gx, gy = gradients(level)
        angle = np.clip((np.arctan2(gy, gx) % np.pi) / np.pi, 0, 0.999999).reshape(n, -1)
        weights = (np.sqrt(np.sqrt(gx**2 + gy**2)) * centre_window(level.shape[1])).reshape(n, -1)
        out.append(hellinger(soft_histograms(angle, weights, ORIENTATION_BINS, True))[:, 0])
    return np.concatenate(out, axis=1)


def ring_index(side: int, edges: Sequence[float] = RING_EDGES) -> np.ndarray:
    """(side, side) ints: the concentric ring (between consecutive ``edges``, radii in units of the side) of each pixel, -1 outside all."""
    axis = (np.arange(side) + 0.5) / side - 0.5
    radius = np.sqrt(axis[:, None] ** 2 + axis[None, :] ** 2)
    ring = np.full((side, side), -1, dtype=np.int64)
    for i, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
        ring[(radius >= a) & (radius < b)] = i
    return ring


def radial_orientation_features(grey: np.ndarray, ring: np.ndarray, n_rings: int) -> np.ndarray:
    """grey: (n, s, s); ring: (s, s) ring index, -1 outside. Per ring, a histogram of gradient direction minus
    polar angle (mod pi), normalised together: (n, n_rings * RADIAL_BINS)."""
    n, side = grey.shape[0], grey.shape[1]
    gx, gy = gradients(grey)
    axis = (np.arange(side) + 0.5) / side - 0.5
    polar = np.arctan2(np.repeat(axis[:, None], side, 1), np.repeat(axis[None, :], side, 0))
    relative = np.clip(((np.arctan2(gy, gx) - polar) % np.pi) / np.pi, 0, 0.999999).reshape(n, -1)
    strength = np.sqrt(np.sqrt(gx**2 + gy**2)).reshape(n, -1) * (ring >= 0).reshape(1, -1)
    hist = soft_histograms(relative, strength, RADIAL_BINS, True, np.maximum(ring, 0).reshape(-1), n_rings)
    return hellinger(hist.reshape(n, -1))


def layout_features(rgb_small: np.ndarray) -> np.ndarray:
    """rgb_small: (n, LAYOUT_SIDE, LAYOUT_SIDE, 3) in [0, 1]. Per-channel mean removed, flattened: (n, LAYOUT_SIDE**2 * 3)."""
    centred = rgb_small - rgb_small.mean(axis=(1, 2), keepdims=True)
    return centred.reshape(rgb_small.shape[0], -1)


def combine_blocks(blocks: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """L2-normalise each (n, d_i) block, scale it by its weight, concatenate and normalise: (n, sum d_i)."""
    return l2_normalize(np.concatenate([w * l2_normalize(b) for b, w in zip(blocks, weights)], axis=1)).astype(np.float32)


# --- embedders -----------------------------------------------------------------------------------


class HandcraftedEmbedder(Embedder):
    """Colour, gradient-orientation, layout and ring features; no weights, a few milliseconds per image."""

    dim = COLOUR_BINS * len(RING_EDGES) + 2 * ORIENTATION_BINS + LAYOUT_SIDE**2 * 3 + (len(RING_EDGES) - 1) * RADIAL_BINS
    version = 2  # bumped whenever the features change: an index built by another version must be rebuilt

    def __init__(self) -> None:
        self._window = centre_window(SIDE)
        self._ring = ring_index(SIDE)
        self._n_rings = len(RING_EDGES) - 1

    def _arrays(self, images: Sequence["Image.Image"]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from PIL import Image

        rgb, hsv, small = [], [], []
        for image in images:
            square = image.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0)
            rgb.append(np.asarray(square))
            hsv.append(np.asarray(square.convert("HSV")))
            small.append(np.asarray(square.resize((LAYOUT_SIDE, LAYOUT_SIDE), Image.Resampling.BOX)))
        scale = 1.0 / 255.0
        return np.stack(rgb) * scale, np.stack(hsv) * scale, np.stack(small) * scale

    def embed(self, images: Sequence["Image.Image"]) -> np.ndarray:
        if not len(images):
            return np.zeros((0, self.dim), dtype=np.float32)
        # Small chunks keep the per-pixel arrays in cache: faster than one large batch.
        return np.concatenate([self._embed_chunk(images[i : i + 16]) for i in range(0, len(images), 16)])

    def _embed_chunk(self, images: Sequence["Image.Image"]) -> np.ndarray:
        rgb, hsv, small = self._arrays(images)
        grey = rgb @ np.array([0.299, 0.587, 0.114])
        colour = colour_features(hsv, self._window, self._ring, self._n_rings, foreground_weights(rgb))  # whole, then rings
        blocks = [
            colour[:, 0],
            orientation_features(grey),
            layout_features(small),
            colour[:, 1:].reshape(len(images), -1),
            radial_orientation_features(grey, self._ring, self._n_rings),
        ]
        return combine_blocks(blocks, BLOCK_WEIGHTS)

    def spec(self) -> dict:
        return {"type": "handcrafted", "version": self.version}


class ClipEmbedder(Embedder):
    """Image embeddings of a CLIP or SigLIP model loaded with transformers from a local folder.

    The folder holds the model (``save_pretrained``) and its image-processor config; nothing is downloaded.
    """

    def __init__(self, model_dir: str | Path, batch_size: int = 32, device: str = "cpu"):
        from transformers import AutoImageProcessor, AutoModel

        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").is_file():
            raise DataError(f"{model_dir} is not a model folder (no config.json); pass a CLIP or SigLIP folder saved with save_pretrained.")
        self.processor = AutoImageProcessor.from_pretrained(str(self.model_dir))
        self.model = AutoModel.from_pretrained(str(self.model_dir)).to(device).eval()
        if not hasattr(self.model, "get_image_features"):
            raise DataError(f"the model in {model_dir} has no image tower; use a CLIP or SigLIP model.")
        self.batch_size, self.device = batch_size, device
        self.dim = int(self.embed_batch([_blank()]).shape[1])

    def embed_batch(self, images: Sequence["Image.Image"]) -> np.ndarray:
        import torch

        inputs = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")
        with torch.no_grad():
            out = self.model.get_image_features(pixel_values=inputs["pixel_values"].to(self.device))
        features = out if isinstance(out, torch.Tensor) else out.pooler_output
        return l2_normalize(features.float().cpu().numpy()).astype(np.float32)

    def embed(self, images: Sequence["Image.Image"]) -> np.ndarray:
        if not len(images):
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate([self.embed_batch(images[i : i + self.batch_size]) for i in range(0, len(images), self.batch_size)])

    def spec(self) -> dict:
        return {"type": "clip", "model_dir": str(self.model_dir.resolve())}


def _blank() -> "Image.Image":
    from PIL import Image

    return Image.new("RGB", (32, 32), "grey")


def embedder_from_spec(spec: dict | None) -> Embedder:
    """Rebuild an embedder from its ``spec()``; None gives the default handcrafted embedder."""
    kind = (spec or {"type": "handcrafted"}).get("type")
    if kind == "handcrafted":
        if (spec or {}).get("version", HandcraftedEmbedder.version) != HandcraftedEmbedder.version:
            raise DataError("this index was built by another version of the handcrafted embedder; rebuild it with `mmsearch-r1 index image`.")
        return HandcraftedEmbedder()
    elif kind == "clip":
        return ClipEmbedder(spec["model_dir"])
    raise ConfigError(f"unknown image embedder type `{kind}`; use handcrafted or clip.")
