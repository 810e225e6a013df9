"""How the GRPO update's speed depends on the micro-batch size and on sorting episodes by length, side by side.

One batch of episodes is rolled out once with a freshly built tiny policy (the demo model's default sizes),
in four parts with different turn lengths, so that episode lengths spread as they do in a demo step (about
150 to 600 tokens). Then the same update (reference forward + policy forward/backward + AdamW step) runs on
copies of the policy with different ``train.micro_batch_size``, with the trainer's micro-batches sorted by
length (what it does) and in a random order, as episodes of different lengths arrive in a step (what it did
before). Prints tokens per second of each and its ratio to the unsorted 16.

    python bench/train_update.py [--episodes 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import io
import time


def _samples(n: int):
    import numpy as np
    from PIL import Image

    from mmsearch_r1.data import VQASample

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, size=(56, 56, 3), dtype=np.uint8)).save(buffer, format="PNG")
        out.append(VQASample(f"q{i}", "What is the home city of the guild with this emblem?", buffer.getvalue(), ["Bugergard"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=64, help="Episodes in the batch (8 per prompt; a multiple of 32).")
    parser.add_argument("--repeats", type=int, default=3, help="Timed updates per micro-batch size (the best is kept).")
    args = parser.parse_args()

    import numpy as np
    import torch

    from mmsearch_r1.config import load_config
    from mmsearch_r1.engines.hf import HFEngine
    from mmsearch_r1.models import build_tiny_policy, build_tokenizer
    from mmsearch_r1.reward import score
    from mmsearch_r1.rollout import rollout
    from mmsearch_r1.train.grpo import group_advantages, group_index
    from mmsearch_r1.train import trainer

    torch.set_num_threads(2)
    cfg = load_config(None, ["protocol.max_turns=1"])
    samples = _samples(args.episodes // 8)
    policy = build_tiny_policy(cfg.model, build_tokenizer([s.question for s in samples] * 10, vocab_size=cfg.model.vocab_size))
    engine, part = HFEngine(policy), len(samples) // 4
    trajectories = []
    for i, new_tokens in enumerate((32, 128, 224, 320)):  # a random policy rarely stops early: turns run to the limit
        sampling = cfg.engine.sampling.model_copy(update={"max_new_tokens": new_tokens})
        trajectories += rollout(samples[i * part:(i + 1) * part], engine, None, n=8, protocol=cfg.protocol, sampling=sampling, seed=i)
    trajectories = [trajectories[i] for i in np.random.default_rng(0).permutation(len(trajectories))]
    rewards = [score(t.assistant_turns, t.gold_answers).reward + 0.01 * i for i, t in enumerate(trajectories)]  # spread: non-zero advantages
    advantages = group_advantages(torch.tensor(rewards), group_index([t.group_id for t in trajectories]))
    lengths = [len(t.token_ids) for t in trajectories]
    tokens = sum(lengths)
    print(f"batch: {len(trajectories)} episodes, {tokens} tokens ({min(lengths)}-{max(lengths)} each), "
          f"model {sum(p.numel() for p in policy.model.parameters()):,} parameters")

    reference = copy.deepcopy(policy)
    reference.model.requires_grad_(False)
    sort_by_length = trainer._by_length
    results = {}
    for micro in (4, 8, 16, 64):
        tc = load_config(None, [f"train.micro_batch_size={micro}"]).train
        for order in ("sorted", "random order"):
            trainer._by_length = sort_by_length if order == "sorted" else (lambda indices, _: indices)
            best = float("inf")
            for _ in range(args.repeats):
                trained = copy.deepcopy(policy)
                optimizer = torch.optim.AdamW(trained.model.parameters(), lr=tc.lr)
                began = time.perf_counter()
                trainer.policy_update(trained, reference, optimizer, trajectories, advantages, tc)
                best = min(best, time.perf_counter() - began)
            results[micro, order] = best
    trainer._by_length = sort_by_length
    base = results[16, "random order"]
    print("| micro_batch_size | micro-batches | update s | tokens/s | speed vs 16 in random order |")
    print("|---|---|---|---|---|")
    for (micro, order), seconds in results.items():
        print(f"| {micro} | {order} | {seconds:.2f} | {tokens / seconds:,.0f} | {base / seconds:.2f}x |")


if __name__ == "__main__":
    main()
