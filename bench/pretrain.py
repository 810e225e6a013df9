"""The pretraining budget: world build + pretraining wall time, and training speed at 1 and 2 torch threads.

    python bench/pretrain.py [--size small|default] [--out /tmp/pretrain_bench] [--config configs/pretrain.toml] [--set pretrain.epochs=2 ...]

Prints the seconds of each stage (world build, setup, demonstrations, training, report), the training
tokens per second, and, side by side in the same run, the training speed of 20 steps with 1 and with 2
threads, each with the output head on every position and on the loss positions only
(``pretrain.head_on_loss_only``), alternated and repeated (the median of 3). Budgets on 2 CPU cores:
small world build + pretraining < 90 s; default pretraining < 6 min. The machine's other load changes
every figure; the script prints the load average it saw. CPU kernels are pinned as the ``mmsearch-r1``
command pins them (``mmsearch_r1.cpu_kernels``), so the pretraining is the command's, bit for bit.
"""

import argparse
import json
import os
import time
from pathlib import Path


def training_speeds(cfg, world_dir: Path, steps: int = 20, rounds: int = 3) -> tuple[dict[tuple[int, bool], float], int]:
    """Training tokens per second, the median of ``rounds`` timings of ``steps`` batches of the first epoch with
    demonstrations, for each (torch threads, ``pretrain.head_on_loss_only``); and the steps timed.

    A step is the one pretraining takes (forward, backward, gradient clipping, optimizer step) on batches
    collated beforehand. Within a thread count the two head settings alternate, first one then the other,
    so that a change in the machine's load falls on both.
    """
    import statistics

    import numpy as np
    import torch

    from mmsearch_r1.models.policy import build_tiny_policy
    from mmsearch_r1.models.pretrain import DemoSource, batch_up, collate, lm_loss, read_split, world_texts, world_toolbox
    from mmsearch_r1.models.tokenizer import build_tokenizer
    from mmsearch_r1.world.schema import load_world

    world = load_world(world_dir)
    policy = build_tiny_policy(cfg.model, build_tokenizer(world_texts(world, world_dir), vocab_size=cfg.model.vocab_size))
    source = DemoSource(cfg, world, read_split(world_dir, "train"), world_toolbox(world_dir), policy)
    batches = batch_up(source.epoch(cfg.pretrain.drill_epochs, {}), cfg.pretrain.batch_tokens, np.random.default_rng(0))
    warm_up = 3  # the first steps of each timing warm the allocator and kernels up
    if len(batches) <= warm_up + 1:
        raise SystemExit(f"the first epoch with demonstrations has {len(batches)} batches, too few to time; use a larger world or config.")
    image_id = policy.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    collated = [collate(b, policy.tokenizer.pad_token_id, image_id) for b in batches[:steps + warm_up]]
    model = policy.model.train()
    timings: dict[tuple[int, bool], list[float]] = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for k in range(2 * rounds):
            head_on_loss_only = k % 2 == (k // 2) % 2  # on, off, off, on, on, off: each goes first as often
            optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain.lr)
            tokens, started = 0, 0.0
            for n, batch in enumerate(collated):
                if n == warm_up:
                    started = time.perf_counter()
                loss = lm_loss(model, batch, head_on_loss_only=head_on_loss_only)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.pretrain.grad_clip)
                optimizer.step()
                tokens += int(batch["inputs"]["attention_mask"].sum()) if n >= warm_up else 0
            timings.setdefault((threads, head_on_loss_only), []).append(tokens / (time.perf_counter() - started))
    return {key: statistics.median(values) for key, values in timings.items()}, len(collated) - warm_up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small", choices=["small", "default"])
    parser.add_argument("--out", type=Path, default=Path("/tmp/pretrain_bench"))
    parser.add_argument("--config", type=Path, default=None, help="TOML config (default: the built-in defaults); --size still chooses the world.")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    from mmsearch_r1.cpu_kernels import pin_cpu_kernels

    pin_cpu_kernels()  # before torch loads, as the command does
    from mmsearch_r1.config import load_config
    from mmsearch_r1.models.pretrain import pretrain
    from mmsearch_r1.world.build import build_world

    cfg = load_config(args.config, args.overrides)
    started = time.perf_counter()
    world_dir = build_world(args.out / "world", seed=cfg.seed, size=args.size)
    build_seconds = time.perf_counter() - started
    policy_dir = args.out / "policy"
    if policy_dir.exists():
        import shutil

        shutil.rmtree(policy_dir)
    started = time.perf_counter()
    pretrain(cfg, world_dir, policy_dir)
    pretrain_seconds = time.perf_counter() - started
    report = json.loads((policy_dir / "pretrain_report.json").read_text())
    print(f"load average at the end: {os.getloadavg()}")
    print(f"{args.size} world build: {build_seconds:.1f} s; pretraining: {pretrain_seconds:.1f} s; together {build_seconds + pretrain_seconds:.1f} s")
    print("pretraining stages (s): " + ", ".join(f"{k} {v}" for k, v in report["seconds"].items()))
    print(f"training: {report['training']['steps']} steps, {report['tokens']:,} tokens, {report['training']['tokens_per_second']} tokens/s")
    speeds, steps = training_speeds(cfg, world_dir)
    print(f"training speed, tokens/s, median of 3 timings of {steps} steps (ratio to 1 thread with the full head):")
    for (threads, head_on_loss_only), speed in sorted(speeds.items()):
        print(f"  {threads} thread{'s' if threads > 1 else ''}, head_on_loss_only={str(head_on_loss_only).lower():5}  {speed:8.0f}  ({speed / speeds[1, False]:.2f})")
    for threads in (1, 2):
        print(f"  head on the loss positions alone against the full head, {threads} thread{'s' if threads > 1 else ''}: {speeds[threads, True] / speeds[threads, False]:.2f}x")


if __name__ == "__main__":
    main()
