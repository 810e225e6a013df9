"""How the GRPO update's speed depends on the micro-batch size, on sorting episodes by length and on scoring
only the sampled tokens, side by side.

The batch is 64 episodes, 8 per prompt, as in a demo step:

- by default it is rolled out once with a freshly built tiny policy (the ``ModelConfig`` defaults: 3 layers, where the full demo's has 4), in four
  parts with different turn lengths, so that episode lengths spread as they do in a demo step (about 150 to
  600 tokens); a random policy's turns run to their limit, so about 60 % of the tokens are sampled;
- with ``--run DIR`` (a finished demo folder) it is a GRPO step's rollout of the demo's pretrained policy on
  its first 8 balanced training questions, with the world's search tools: about a tenth of its tokens are
  sampled, the rest are prompts and search results.

Then the same update (reference forward + policy forward/backward + AdamW step) runs on copies of the policy:
with different ``train.micro_batch_size``, with the trainer's micro-batches sorted by length (what it does)
and in a random order (what it did before); and, at the demo's micro-batch size, with the output head run on
the sampled tokens only (what the trainer does) against on every position (what it did before). Prints the
seconds and tokens per second of each and their ratios.

    python bench/train_update.py [--run runs/demo] [--episodes 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import io
import time
from pathlib import Path


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


def synthetic_batch(episodes: int):
    """A fresh tiny policy and its episodes, turn lengths spread over four parts."""
    import numpy as np

    from mmsearch_r1.config import load_config
    from mmsearch_r1.engines.hf import HFEngine
    from mmsearch_r1.models import build_tiny_policy, build_tokenizer
    from mmsearch_r1.reward import score
    from mmsearch_r1.rollout import rollout

    cfg = load_config(None, ["protocol.max_turns=1"])
    samples = _samples(episodes // 8)
    policy = build_tiny_policy(cfg.model, build_tokenizer([s.question for s in samples] * 10, vocab_size=cfg.model.vocab_size))
    engine, part = HFEngine(policy), len(samples) // 4
    trajectories = []
    for i, new_tokens in enumerate((32, 128, 224, 320)):  # a random policy rarely stops early: turns run to the limit
        sampling = cfg.engine.sampling.model_copy(update={"max_new_tokens": new_tokens})
        trajectories += rollout(samples[i * part:(i + 1) * part], engine, None, n=8, protocol=cfg.protocol, sampling=sampling, seed=i)
    trajectories = [trajectories[i] for i in np.random.default_rng(0).permutation(len(trajectories))]
    rewards = [score(t.assistant_turns, t.gold_answers).reward + 0.01 * i for i, t in enumerate(trajectories)]  # spread: non-zero advantages
    return policy, trajectories, rewards, cfg


def demo_batch(run: Path, episodes: int):
    """The demo's pretrained policy and one GRPO step's rollout of it on the balanced training set."""
    from mmsearch_r1.config import load_config
    from mmsearch_r1.data import read_parquet
    from mmsearch_r1.demo import world_toolbox
    from mmsearch_r1.engines.hf import HFEngine
    from mmsearch_r1.models import load_policy
    from mmsearch_r1.reward import score
    from mmsearch_r1.rollout import rollout

    cfg = load_config(run / "config.toml", [])
    policy = load_policy(run / "pretrained")
    samples = read_parquet(run / "balanced" / "train.parquet")[: episodes // 8]
    trajectories = rollout(samples, HFEngine(policy), world_toolbox(run / "world", cfg), n=8, protocol=cfg.protocol,
                           sampling=cfg.engine.sampling, seed=cfg.seed)
    r = cfg.reward
    rewards = [score(t.assistant_turns, t.gold_answers, format_weight=r.format_weight, search_penalty=r.search_penalty, match=r.match,
                     per_search_penalty=r.per_search_penalty).reward + 0.01 * i for i, t in enumerate(trajectories)]
    return policy, trajectories, rewards, cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None, help="A finished demo folder: update on a GRPO step of its pretrained policy (default: a fresh random policy).")
    parser.add_argument("--episodes", type=int, default=64, help="Episodes in the batch (8 per prompt; without --run a multiple of 32).")
    parser.add_argument("--repeats", type=int, default=3, help="Timed updates per setting (the best is kept).")
    args = parser.parse_args()

    import torch

    from mmsearch_r1.engines.hf import trajectory_logprobs
    from mmsearch_r1.train import trainer
    from mmsearch_r1.train.grpo import group_advantages, group_index

    torch.set_num_threads(2)
    policy, trajectories, rewards, cfg = demo_batch(args.run, args.episodes) if args.run else synthetic_batch(args.episodes)
    advantages = group_advantages(torch.tensor(rewards), group_index([t.group_id for t in trajectories]))
    lengths = [len(t.token_ids) for t in trajectories]
    tokens, sampled = sum(lengths), sum(sum(t.loss_mask) for t in trajectories)
    print(f"batch: {len(trajectories)} episodes, {tokens} tokens ({min(lengths)}-{max(lengths)} each), {sampled} sampled "
          f"({sampled / tokens:.0%}); model {sum(p.numel() for p in policy.model.parameters()):,} parameters; "
          f"{'demo run ' + str(args.run) if args.run else 'random weights'}")

    reference = copy.deepcopy(policy)
    reference.model.requires_grad_(False)
    sort_by_length, sampled_only = trainer._by_length, trainer._trajectory_logprobs
    every_position = lambda policy, trajectories, temperature: trajectory_logprobs(policy, list(trajectories), temperature)  # noqa: E731
    settings = [(micro, order, "sampled") for micro in (4, 8, 16, 64) for order in ("sorted", "random order")]
    settings.insert(settings.index((8, "sorted", "sampled")) + 1, (8, "sorted", "every position"))
    results = dict.fromkeys(settings, float("inf"))
    for _ in range(args.repeats):  # settings alternate, so that a change in the machine's load reaches all of them
        for micro, order, scoring in settings:
            tc = cfg.train.model_copy(update={"micro_batch_size": micro})  # the run's settings (--run) or the defaults
            trainer._by_length = sort_by_length if order == "sorted" else (lambda indices, _: indices)
            trainer._trajectory_logprobs = sampled_only if scoring == "sampled" else every_position
            trained = copy.deepcopy(policy)
            optimizer = torch.optim.AdamW(trained.model.parameters(), lr=tc.lr)
            began = time.perf_counter()
            trainer.policy_update(trained, reference, optimizer, trajectories, advantages, tc, temperature=cfg.engine.sampling.temperature)
            results[micro, order, scoring] = min(results[micro, order, scoring], time.perf_counter() - began)
    trainer._by_length, trainer._trajectory_logprobs = sort_by_length, sampled_only
    base = results[16, "random order", "sampled"]
    print("| micro_batch_size | micro-batches | output head on | update s | tokens/s | speed vs 16 in random order |")
    print("|---|---|---|---|---|---|")
    for (micro, order, scoring), seconds in results.items():
        print(f"| {micro} | {order} | {'sampled tokens' if scoring == 'sampled' else scoring} | {seconds:.2f} | {tokens / seconds:,.0f} | {base / seconds:.2f}x |")
    print(f"\nsampled tokens only vs every position (micro-batch 8, sorted): "
          f"{results[8, 'sorted', 'every position'] / results[8, 'sorted', 'sampled']:.2f}x faster")


if __name__ == "__main__":
    main()
