"""Emblems: choosing each entity's visual signature, and drawing jittered renderings of it with PIL.

Signatures are chosen to be far apart: every entity gets its own ordered (fill colour, accent colour) pair
from a palette of 12 saturated colours, and shapes and patterns are dealt round-robin, so that colour
features alone nearly identify an entity and shape and pattern separate the rest. Every rendering is
jittered (position, scale, rotation, colour, pale background with a gradient, pixel noise, brightness), so
no two renderings are the same image and search works by similarity, never by identity.

The emblem is drawn on a canvas ``SUPERSAMPLE`` times larger than the output and then box-filtered down,
which keeps the small images (56-84 pixels) smooth; the background is made at the output size.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from mmsearch_r1.world.schema import RenderSettings, Signature

if TYPE_CHECKING:
    from mmsearch_r1.world.schema import Entity, World

SUPERSAMPLE = 3
PALETTE: tuple[tuple[int, int, int], ...] = (
    (215, 40, 40), (245, 140, 20), (235, 205, 30), (140, 205, 40), (25, 140, 55), (20, 160, 160),
    (70, 190, 240), (40, 60, 200), (125, 50, 185), (220, 60, 170), (120, 70, 30), (45, 45, 50),
)
SHAPES = ("circle", "square", "triangle", "diamond", "hexagon", "star", "cross", "pentagon")
PATTERNS = ("core", "hstripes", "vstripes", "diagonal", "dots", "checker", "rings", "half")
MARKS = ("dot", "bar", "ring", "none")


# --- choosing signatures ----------------------------------------------------------------------


def choose_signatures(rng: np.random.Generator, count: int) -> list[Signature]:
    """``count`` signatures, each with a distinct ordered colour pair (unordered pairs are used up first).

    At most 12 * 11 = 132 entities fit; shapes, patterns and marks are dealt from shuffled decks. An entity
    whose pair is the reverse of an earlier one gets another shape and a low-coverage pattern (``core`` or
    ``dots``), so that its colour mix stays unlike its twin's (a half-and-half pattern would make them equal).
    """
    n_colours = len(PALETTE)
    if count > n_colours * (n_colours - 1):
        raise ValueError(f"at most {n_colours * (n_colours - 1)} entities have distinct colour pairs, asked {count}")
    unordered = [(a, b) for a in range(n_colours) for b in range(a + 1, n_colours)]
    rng.shuffle(unordered)
    pairs = [(a, b) if rng.random() < 0.5 else (b, a) for a, b in unordered]
    pairs += [(b, a) for a, b in pairs]  # the reversed pairs, used only past 66 entities
    shapes, patterns, marks = _deck(rng, SHAPES, count), _deck(rng, PATTERNS, count), _deck(rng, MARKS, count)
    signatures = []
    for i in range(count):
        fill, accent = pairs[i]
        if i >= len(unordered):  # a reversed pair: change the shape, and cover little of the fill with the accent
            twin = signatures[i - len(unordered)]
            if shapes[i] == twin.shape:
                shapes[i] = SHAPES[(SHAPES.index(shapes[i]) + 1) % len(SHAPES)]
            patterns[i] = "dots" if twin.pattern == "core" else "core"
        colour = PALETTE[fill]
        signatures.append(Signature(shapes[i], colour, PALETTE[accent], patterns[i], marks[i], _contrast(colour)))
    return signatures


def _deck(rng: np.random.Generator, items: tuple[str, ...], count: int) -> list[str]:
    deck: list[str] = []
    while len(deck) < count:
        deck += [items[i] for i in rng.permutation(len(items))]
    return deck[:count]


def _contrast(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    luma = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    return (20, 20, 20) if luma > 120 else (245, 245, 245)


# --- drawing --------------------------------------------------------------------------------------


def shape_polygon(shape: str, cx: float, cy: float, radius: float) -> list[tuple[float, float]]:
    """Vertices of ``shape`` centred at (cx, cy) with circumradius ``radius`` (a circle is a 48-gon)."""
    def ngon(n: int, start: float, radii: tuple[float, ...] = (1.0,)) -> list[tuple[float, float]]:
        return [
            (cx + radius * radii[i % len(radii)] * math.cos(start + 2 * math.pi * i / n),
             cy + radius * radii[i % len(radii)] * math.sin(start + 2 * math.pi * i / n))
            for i in range(n)
        ]

    if shape == "circle":
        return ngon(48, 0.0)
    if shape == "square":
        return ngon(4, math.pi / 4)
    if shape == "diamond":
        return ngon(4, 0.0, (1.0, 0.7))
    if shape == "triangle":
        return ngon(3, -math.pi / 2)
    if shape == "pentagon":
        return ngon(5, -math.pi / 2)
    if shape == "hexagon":
        return ngon(6, 0.0)
    if shape == "star":
        return ngon(10, -math.pi / 2, (1.0, 0.45))
    if shape == "cross":
        a, w = radius, radius * 0.36
        offsets = [(-w, -a), (w, -a), (w, -w), (a, -w), (a, w), (w, w), (w, a), (-w, a), (-w, w), (-a, w), (-a, -w), (-w, -w)]
        return [(cx + dx, cy + dy) for dx, dy in offsets]
    raise ValueError(f"unknown shape {shape!r}; known shapes: {', '.join(SHAPES)}")


def _draw_pattern(draw: ImageDraw.ImageDraw, sig: Signature, fill: tuple[int, int, int], accent: tuple[int, int, int], c: float, r: float) -> None:
    """Paint the accent pattern over the square [c - r, c + r]^2 (the shape mask clips it later)."""
    lo, hi, step = c - r, c + r, r / 2.5
    if sig.pattern == "core":
        draw.polygon(shape_polygon(sig.shape, c, c, r * 0.55), fill=accent)
    elif sig.pattern == "hstripes":
        for k in range(6):
            draw.rectangle([lo, lo + 2 * k * step, hi, lo + (2 * k + 1) * step], fill=accent)
    elif sig.pattern == "vstripes":
        for k in range(6):
            draw.rectangle([lo + 2 * k * step, lo, lo + (2 * k + 1) * step, hi], fill=accent)
    elif sig.pattern == "diagonal":
        for k in range(-6, 7):
            x = c + k * 2 * step
            draw.polygon([(x - r, lo), (x - r + step, lo), (x + r + step, hi), (x + r, hi)], fill=accent)
    elif sig.pattern == "dots":
        for i in range(-2, 3):
            for j in range(-2, 3):
                x, y = c + i * step * 1.6, c + j * step * 1.6
                draw.ellipse([x - step * 0.45, y - step * 0.45, x + step * 0.45, y + step * 0.45], fill=accent)
    elif sig.pattern == "checker":
        for i in range(5):
            for j in range(5):
                if (i + j) % 2 == 0:
                    x, y = lo + i * step * 2 * 0.8, lo + j * step * 2 * 0.8
                    draw.rectangle([x, y, x + step * 1.6, y + step * 1.6], fill=accent)
    elif sig.pattern == "rings":
        for k, frac in enumerate((0.95, 0.75, 0.55, 0.35, 0.15)):
            draw.ellipse([c - r * frac, c - r * frac, c + r * frac, c + r * frac], fill=accent if k % 2 == 0 else fill)
    elif sig.pattern == "half":
        draw.rectangle([lo, lo, c, hi], fill=accent)
    else:
        raise ValueError(f"unknown pattern {sig.pattern!r}; known patterns: {', '.join(PATTERNS)}")


def _draw_mark(draw: ImageDraw.ImageDraw, sig: Signature, c: float, r: float) -> None:
    m = r * 0.2
    if sig.mark == "dot":
        draw.ellipse([c - m, c - m, c + m, c + m], fill=sig.mark_colour)
    elif sig.mark == "bar":
        draw.rectangle([c - 2 * m, c - m * 0.5, c + 2 * m, c + m * 0.5], fill=sig.mark_colour)
    elif sig.mark == "ring":
        draw.ellipse([c - m * 1.4, c - m * 1.4, c + m * 1.4, c + m * 1.4], outline=sig.mark_colour, width=max(1, int(m * 0.5)))


def _jitter_colour(colour: tuple[int, int, int], rng: np.random.Generator, amount: int = 12) -> tuple[int, int, int]:
    return tuple(int(np.clip(v + rng.integers(-amount, amount + 1), 0, 255)) for v in colour)  # type: ignore[return-value]


def _background(rng: np.random.Generator, side: int) -> np.ndarray:
    """A pale background: a grey level with a slight tint and a linear gradient; float array (side, side, 3)."""
    base = rng.uniform(205, 245) + rng.integers(-12, 13, size=3)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = np.linspace(-1.0, 1.0, side)
    gradient = math.cos(angle) * ramp[None, :] + math.sin(angle) * ramp[:, None]
    return base[None, None, :] + rng.uniform(0, 18) * gradient[:, :, None]


def render_signature(sig: Signature, rng: np.random.Generator, size: int, settings: RenderSettings = RenderSettings()) -> Image.Image:
    """One jittered RGB rendering (``size`` x ``size`` pixels) of an emblem; all randomness comes from ``rng``."""
    side = size * SUPERSAMPLE
    c = side / 2
    r = side * 0.36 * rng.uniform(*settings.scale_range)
    # The emblem: fill colour, accent pattern and centre mark, clipped to the shape.
    fill = _jitter_colour(sig.colour, rng)
    emblem = Image.new("RGB", (side, side), fill)
    draw = ImageDraw.Draw(emblem)
    _draw_pattern(draw, sig, fill, _jitter_colour(sig.accent, rng), c, r)
    _draw_mark(draw, sig, c, r)
    mask = Image.new("L", (side, side), 0)
    ImageDraw.Draw(mask).polygon(shape_polygon(sig.shape, c, c, r), fill=255)
    emblem.putalpha(mask)
    # Pose: rotate about the centre and shift, then shrink to the output size. Nearest-neighbour rotation is
    # 15x faster than bilinear here, and the box filter over the supersample smooths its edges anyway.
    angle = rng.uniform(-settings.max_rotation, settings.max_rotation)
    shift = tuple(rng.uniform(-settings.max_shift, settings.max_shift, size=2) * side)
    emblem = emblem.rotate(angle, resample=Image.Resampling.NEAREST, center=(c, c), translate=shift)
    rgba = np.asarray(emblem.reduce(SUPERSAMPLE), dtype=np.float32) / 255.0
    alpha = rgba[..., 3:]
    pixels = rgba[..., :3] * 255.0 * alpha + _background(rng, size) * (1.0 - alpha)
    # Photometric jitter: brightness and pixel noise.
    pixels = pixels * rng.uniform(0.94, 1.06) + rng.normal(0.0, settings.noise_std, size=pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8))


def render_entity(world: "World", entity: "Entity", rng: np.random.Generator, size: int | None = None) -> Image.Image:
    """A fresh jittered rendering of ``entity``'s emblem, ``size`` pixels square (the world's image size by default).

    >>> import numpy as np
    >>> from mmsearch_r1.world.build import generate_world
    >>> world = generate_world(seed=0, size="small")
    >>> image = render_entity(world, world.entities[0], np.random.default_rng(1))
    >>> image.size == (world.render.image_size, world.render.image_size)
    True
    """
    return render_signature(entity.signature, rng, size or world.render.image_size, world.render)


def contact_sheet(world: "World", seed: int = 0, columns: int = 8, size: int | None = None) -> Image.Image:
    """One rendering of every entity, in world order, ``columns`` per row, each captioned with its name and group."""
    side = size or world.render.image_size
    caption = 24
    rows = -(-len(world.entities) // columns)
    sheet = Image.new("RGB", (columns * side * 2, rows * (side * 2 + caption)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, entity in enumerate(world.entities):
        x, y = (i % columns) * side * 2, (i // columns) * (side * 2 + caption)
        image = render_entity(world, entity, np.random.default_rng([seed, i]), side)
        sheet.paste(image.resize((side * 2, side * 2), Image.Resampling.NEAREST), (x, y))
        draw.text((x + 2, y + side * 2 + 1), entity.name, fill=(0, 0, 0))
        draw.text((x + 2, y + side * 2 + 12), entity.group, fill=(90, 90, 90))
    return sheet
