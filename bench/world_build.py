"""Demo world: build time per size, and how well the local search tools work on it.

Prints, for the small and the default world (seed 0): build seconds, question counts, image-search recall@1
and recall@5 of the question images of test + heldout (their entity's page ranked first / in the top 5),
and the share of "<entity name> <attribute phrase>" text queries whose top hit is the entity's page with the
fact sentence first in its summary.

    python bench/world_build.py [--sizes small default] [--seed 0]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from mmsearch_r1.data import read_parquet
from mmsearch_r1.world import build_world
from mmsearch_r1.world.checks import image_recall, text_fact_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["small", "default"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{'size':8} {'build s':>8} {'train':>6} {'test':>5} {'heldout':>7} {'img R@1':>8} {'img R@5':>8} {'fact 1st':>9} {'answer@1':>9}")
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            folder = build_world(Path(tmp) / "world", seed=args.seed, size=size)
            seconds = time.perf_counter() - started
            counts = [len(read_parquet(folder / f"{split}.parquet")) for split in ("train", "test", "heldout")]
            image, text = image_recall(folder), text_fact_rate(folder)
            print(f"{size:8} {seconds:8.1f} {counts[0]:6d} {counts[1]:5d} {counts[2]:7d} {image.recall_at_1:8.1%} {image.recall_at_k:8.1%} "
                  f"{text.fact_first:9.1%} {text.answer_in_top1:9.1%}")


if __name__ == "__main__":
    main()
