"""The demo world: a seeded generator of guilds with emblems, facts, web pages, questions and local indexes.

``build_world(out_dir, seed, size)`` writes a world folder; ``load_world(dir)`` reads its ``world.json``
back; ``render_entity(world, entity, rng)`` draws a fresh jittered emblem (for pretraining examples).
Names load lazily so that importing the package (and the config tree) stays cheap.
"""

from __future__ import annotations

__all__ = ["GROUPS", "Entity", "Fact", "World", "build_world", "generate_world", "load_world", "render_entity"]


def __getattr__(name: str):
    if name in ("build_world", "generate_world"):
        from mmsearch_r1.world import build

        return getattr(build, name)
    if name == "render_entity":
        from mmsearch_r1.world.render import render_entity

        return render_entity
    if name in ("GROUPS", "Entity", "Fact", "World", "load_world"):
        from mmsearch_r1.world import schema

        return getattr(schema, name)
    raise AttributeError(f"module 'mmsearch_r1.world' has no attribute {name!r}")
