"""How the GRPO update's speed depends on the micro-batch size, measured side by side in one run.

One batch of episodes is rolled out once with a freshly built tiny policy (the demo model's default sizes);
then the same update (reference forward + policy forward/backward + AdamW step) runs on copies of the
policy with different ``train.micro_batch_size``. Prints tokens per second of each and its ratio to the
smallest micro-batch.

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
    parser.add_argument("--episodes", type=int, default=64, help="Episodes in the batch (8 per prompt).")
    parser.add_argument("--repeats", type=int, default=3, help="Timed updates per micro-batch size (the best is kept).")
    args = parser.parse_args()

    import torch

    from mmsearch_r1.config import load_config
    from mmsearch_r1.engines.hf import HFEngine
    from mmsearch_r1.models import build_tiny_policy, build_tokenizer
    from mmsearch_r1.reward import score
    from mmsearch_r1.rollout import rollout
    from mmsearch_r1.train.grpo import group_advantages, group_index
    from mmsearch_r1.train.trainer import policy_update

    torch.set_num_threads(2)
    cfg = load_config(None, ["engine.sampling.max_new_tokens=32", "protocol.max_turns=1"])
    samples = _samples(args.episodes // 8)
    policy = build_tiny_policy(cfg.model, build_tokenizer([s.question for s in samples] * 10, vocab_size=cfg.model.vocab_size))
    trajectories = rollout(samples, HFEngine(policy), None, n=8, protocol=cfg.protocol, sampling=cfg.engine.sampling, seed=0)
    rewards = [score(t.assistant_turns, t.gold_answers).reward + 0.01 * i for i, t in enumerate(trajectories)]  # spread: non-zero advantages
    advantages = group_advantages(torch.tensor(rewards), group_index([t.group_id for t in trajectories]))
    tokens = sum(len(t.token_ids) for t in trajectories)
    print(f"batch: {len(trajectories)} episodes, {tokens} tokens, model {sum(p.numel() for p in policy.model.parameters()):,} parameters")

    reference = copy.deepcopy(policy)
    reference.model.requires_grad_(False)
    results = {}
    for micro in (4, 16, 64):
        tc = load_config(None, [f"train.micro_batch_size={micro}"]).train
        best = float("inf")
        for _ in range(args.repeats):
            trained = copy.deepcopy(policy)
            optimizer = torch.optim.AdamW(trained.model.parameters(), lr=tc.lr)
            began = time.perf_counter()
            policy_update(trained, reference, optimizer, trajectories, advantages, tc)
            best = min(best, time.perf_counter() - began)
        results[micro] = best
    base = results[4]
    print("| micro_batch_size | update s | tokens/s | speed vs 4 |")
    print("|---|---|---|---|")
    for micro, seconds in results.items():
        print(f"| {micro} | {seconds:.2f} | {tokens / seconds:,.0f} | {base / seconds:.2f}x |")


if __name__ == "__main__":
    main()
