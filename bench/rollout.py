"""Rollout throughput on the demo world with the tiny model: batched vs one episode at a time, and vs raw generate.

    python bench/rollout.py                       # builds a small demo world and a random tiny policy in a temp folder
    python bench/rollout.py --world worlds/demo --model runs/pretrain/policy --episodes 128
    python bench/rollout.py --kv-cache on          # only the default engine (off: only the generate path)

Prints three figures measured side by side in one run:
1. wall time of the same episodes run as one batch and one at a time, and their ratio (target >= 8x);
2. sampled tokens/s of the batched rollout against raw ``model.generate`` over the same first-turn prompts,
   forced to make about as many new tokens in total (target >= 0.7 of raw); raw generate has one prefill
   and no tools, the rollout a prefill per turn (with the KV cache: of the tokens added since the episode's
   last turn; without: of the whole context), tool calls and token bookkeeping;
3. what the episodes did (turns, searches, retokenized turns), so the figures can be read in context.

``--phases`` then times the cached engine's batched rollout phase by phase (first-turn prefill, prefill of
the feedback turns, decode steps, the rest of the engine, encoding the given turns with the processor,
the searches), fastest of ``--repeats`` runs, with the positions each prefill ran.

``--kv-cache both`` (the default) runs all of it for the hf engine with its per-episode KV cache and without
(``generate`` over whole contexts), alternating, and prints how much faster the cached batched rollout was.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", type=Path, default=None, help="Demo world folder; default: build a small one in a temp folder.")
    parser.add_argument("--model", type=Path, default=None, help="Policy folder; default: a tiny policy with random weights.")
    parser.add_argument("--episodes", type=int, default=128, help="Episodes in the batch (test questions, cycled if fewer).")
    parser.add_argument("--group-size", type=int, default=1, help="Episodes per question (GRPO's group size): episodes / group-size questions, each run group-size times.")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="Most tokens per assistant turn.")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads torch may use (1 is fastest for the tiny model on a busy machine).")
    parser.add_argument("--device", default="cpu", help="Where the policy runs: cpu or cuda[:i] (timings then wait for the GPU to finish).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="Timed repeats of the batched rollout and of raw generate (fastest counts).")
    parser.add_argument("--keep-sampled-ids", action="store_true", help="Run with canonical_tokens off (no retokenization).")
    parser.add_argument("--kv-cache", choices=["on", "off", "both"], default="both",
                        help="The hf engine's per-episode KV cache: on (default engine), off (generate over whole contexts), or both side by side.")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall: elapsed seconds; cpu: this process's CPU seconds (steadier on a shared machine; with 1 thread the same as wall on an idle one).")
    parser.add_argument("--phases", action="store_true", help="Also time the KV-cache engine's batched rollout phase by phase (prefill, decode, host work).")
    args = parser.parse_args()
    if args.phases and args.kv_cache == "off":
        parser.error("--phases times the KV-cache engine; use --kv-cache on or both.")
    return args


def setup(args: argparse.Namespace, scratch: Path):
    import mmsearch_r1.config  # noqa: F401
    from mmsearch_r1.config import load_config
    from mmsearch_r1.data import read_parquet
    from mmsearch_r1.engines.hf import HFEngine
    from mmsearch_r1.models import ModelConfig, build_tiny_policy, build_tokenizer, load_policy
    from mmsearch_r1.models.policy import require_device
    from mmsearch_r1.tools import build_toolbox
    from mmsearch_r1.world import build_world

    world = args.world or build_world(scratch / "world", seed=args.seed, size="small")
    if args.model is not None:
        policy, weights = load_policy(args.model), f"checkpoint {args.model}"
    else:
        pages = [line for line in (world / "pages.jsonl").read_text().splitlines()]
        policy, weights = build_tiny_policy(ModelConfig(), build_tokenizer(pages)), "random weights (ModelConfig defaults)"
    policy.model.to(require_device(args.device, "--device"))
    # `pretrain` writes its config beside the policy, `train` one folder up (OUT/policy, OUT/checkpoints/step_N/policy):
    # run the policy under its own protocol (the demo's shows 3 results a search, as the defaults do; older policies may show 5), as its evaluations do.
    own = next((f / "config.toml" for f in (args.model, args.model.parent) if (f / "config.toml").is_file()), None) if args.model else None
    cfg = load_config(own, [f"tools.image.index_dir={world / 'image_index'}", f"tools.text.index_dir={world / 'text_index'}", "tools.cache.mode=off"])
    toolbox = build_toolbox(cfg.tools)
    questions = read_parquet(world / "test.parquet")
    samples = [questions[i % len(questions)] for i in range(max(1, args.episodes // args.group_size))]
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.kv_cache]
    engines = {kv: HFEngine(policy, canonical_tokens=not args.keep_sampled_ids, kv_cache=kv) for kv in modes}
    params = sum(p.numel() for p in policy.model.parameters())
    protocol = f"{cfg.protocol.image_top_k} image / {cfg.protocol.text_top_k} text results a search" + (" (the policy's own config)" if own else "")
    return policy, engines, toolbox, samples, cfg, f"{weights}, {params / 1e6:.2f} M parameters; {protocol}"


CLOCK = time.perf_counter  # --clock cpu: time.process_time
SYNC = None  # --device cuda: torch.cuda.synchronize


def timed(fn):
    began = CLOCK()
    out = fn()
    if SYNC is not None:
        SYNC()  # CUDA kernels run asynchronously: count their time in the call that launched them
    return out, CLOCK() - began


class Phases:
    """Seconds spent in each phase of a rollout with the KV-cache engine, timed by wrapping the functions that do them.

    A measuring harness: while active it replaces ``EpisodeCache.extend`` / ``.step``, ``HFEngine.generate``
    and the rollout's ``give`` / ``run_searches`` with timed wrappers, and puts them back on exit. Prefill
    during the first ``generate`` call of a rollout counts as first-turn prefill, every later one as feedback;
    retokenized turns (rare with a trained policy) are rescored through the same calls and count where they fall.
    """

    def __init__(self):
        import mmsearch_r1.rollout as rollout_module
        from mmsearch_r1.engines.hf import EpisodeCache, HFEngine

        self.seconds: dict[str, float] = {}
        self.positions: dict[str, int] = {}
        self.calls = 0
        self._targets = [(EpisodeCache, "extend"), (EpisodeCache, "step"), (HFEngine, "generate"),
                         (rollout_module, "give"), (rollout_module, "run_searches")]
        self._saved: list = []

    def reset(self) -> None:
        self.seconds, self.positions, self.calls = {}, {}, 0

    def _wrap(self, owner, name: str):
        original, phases = getattr(owner, name), self

        labels = {"step": "decode steps", "generate": "engine, all", "give": "encoding the given turns", "run_searches": "the searches"}

        def timed_call(*args, **kwargs):
            phases.calls += name == "generate"
            if name == "extend":
                label = "first-turn prefill" if phases.calls == 1 else "prefill of the feedback turns"
                phases.positions[label] = phases.positions.get(label, 0) + sum(len(c) for c in args[1])
            else:
                label = labels[name]
            out, seconds = timed(lambda: original(*args, **kwargs))
            phases.seconds[label] = phases.seconds.get(label, 0.0) + seconds
            return out

        return original, timed_call

    def __enter__(self) -> "Phases":
        for owner, name in self._targets:
            original, wrapper = self._wrap(owner, name)
            self._saved.append((owner, name, original))
            setattr(owner, name, wrapper)
        return self

    def __exit__(self, *exc) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()

    def table(self, total: float) -> list[tuple[str, float, int | None]]:
        """(phase, seconds, prefilled positions or None) rows, with the rest of the engine and of the rollout derived."""
        s = self.seconds
        model = ("first-turn prefill", "prefill of the feedback turns", "decode steps")
        rows = [(name, s.get(name, 0.0), self.positions.get(name)) for name in model]
        rows.append(("the rest of the engine (sampling, turn records, canonical tokens)", s.get("engine, all", 0.0) - sum(s.get(n, 0.0) for n in model), None))
        rows += [(name, s.get(name, 0.0), None) for name in ("encoding the given turns", "the searches")]
        rows.append(("the rest of the rollout (parsing, episode records)", total - s.get("engine, all", 0.0) - s.get("encoding the given turns", 0.0) - s.get("the searches", 0.0), None))
        return rows


def raw_generate(policy, engine, samples, max_new_tokens: int, seed: int) -> tuple[int, float]:
    """Raw ``generate`` on the first-turn prompts of ``samples`` (one batch, every row forced to ``max_new_tokens``)."""
    import torch

    from mmsearch_r1.engines.hf import pad_batch
    from mmsearch_r1.protocol import Templates, first_turn

    templates = Templates.load()
    spans = [engine.encoder.given_span([], first_turn(s.question, templates), [s.image]) for s in samples]
    inputs = pad_batch([s.token_ids for s in spans], [p for s in spans for p in s.pixel_values], [g for s in spans for g in s.image_grid_thw],
                       pad_id=engine.encoder.pad_id, image_token_id=engine.encoder.image_token_id, left=True, device=policy.model.device)
    torch.manual_seed(seed)
    with torch.no_grad():
        out, seconds = timed(lambda: policy.model.generate(
            **inputs, do_sample=True, top_k=0, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
            pad_token_id=engine.encoder.pad_id, eos_token_id=engine.encoder.end_of_turn_id))
    return (out.shape[1] - inputs["input_ids"].shape[1]) * out.shape[0], seconds


def main() -> None:
    import torch

    from mmsearch_r1.engines.config import SamplingConfig
    from mmsearch_r1.rollout import rollout

    global CLOCK, SYNC
    args = parse_args()
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    SYNC = torch.cuda.synchronize if args.device.startswith("cuda") else None
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        policy, engines, toolbox, samples, cfg, model_note = setup(args, Path(scratch))
        sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=1.0)

        def run(engine, batch, n=args.group_size):
            return rollout(batch, engine, toolbox, n=n, protocol=cfg.protocol, sampling=sampling, seed=args.seed)

        episodes = [sample for sample in samples for _ in range(args.group_size)]  # one entry per episode

        for engine in engines.values():
            run(engine, samples[:4])  # warm-up
        # Batched rollouts (each engine) and raw generate alternate `repeats` times and the fastest of each counts:
        # the machine is shared, and the minimum is the least disturbed measurement of each.
        batched = {kv: (None, float("inf")) for kv in engines}
        raw = {kv: (0, float("inf")) for kv in engines}
        for _ in range(args.repeats):
            for kv, engine in engines.items():
                out, seconds = timed(lambda: run(engine, samples))
                if seconds < batched[kv][1]:
                    batched[kv] = (out, seconds)
                sampled = sum(t.meta["sampled_tokens"] for t in batched[kv][0])  # what the engine sampled, before retokenization
                per_row = max(1, -(-sampled // len(episodes)))  # raw generate makes about as many tokens: ceil(sampled / rows) per row
                tokens, seconds = raw_generate(policy, engine, episodes, per_row, args.seed)
                raw[kv] = (tokens, min(raw[kv][1], seconds))
        sequential = {kv: sum(timed(lambda: run(engine, [sample], 1))[1] for sample in episodes) for kv, engine in engines.items()}
        phases = None
        if args.phases and True in engines:
            with Phases() as harness:
                for _ in range(args.repeats):
                    harness.reset()
                    _, total = timed(lambda: run(engines[True], samples))
                    if phases is None or total < phases[0]:
                        phases = (total, harness.table(total))

    distinct = len({s.id for s in samples})
    print(f"model: tiny Qwen2.5-VL, {model_note}; {len(episodes)} episodes ({distinct} distinct questions x group size {args.group_size}); "
          f"max_new_tokens {args.max_new_tokens}; "
          f"{args.device}; {args.threads} threads; canonical_tokens {not args.keep_sampled_ids}; fastest of {args.repeats} batched/raw runs; {args.clock} clock")
    for kv in engines:
        out, batched_s = batched[kv]
        sequential_s, (raw_tokens, raw_s) = sequential[kv], raw[kv]
        sampled = sum(t.meta["sampled_tokens"] for t in out)
        rollout_rate, raw_rate = sampled / batched_s, raw_tokens / raw_s
        print(f"\n--- kv_cache {'on' if kv else 'off'} ---")
        print(f"episodes: {sum(len(t.actions) for t in out)} assistant turns, {sum(t.searches for t in out)} searches, "
              f"{sum(t.meta['retokenized_turns'] for t in out)} retokenized turns, end reasons "
              f"{ {r: sum(t.end_reason == r for t in out) for r in ('answer', 'invalid', 'limit')} }")
        print(f"batched rollout:        {batched_s:8.2f} s")
        print(f"one episode at a time:  {sequential_s:8.2f} s")
        print(f"speed-up:               {sequential_s / batched_s:8.2f} x   (target >= 8)")
        print(f"batched sampled tokens: {sampled} in {batched_s:.2f} s = {rollout_rate:8.0f} tokens/s")
        print(f"raw generate:           {raw_tokens} in {raw_s:.2f} s = {raw_rate:8.0f} tokens/s")
        print(f"rollout / raw:          {rollout_rate / raw_rate:8.2f}     (target >= 0.7)")
    if len(engines) == 2:
        print(f"\nbatched rollout, kv_cache on vs off: {batched[False][1] / batched[True][1]:.2f}x faster")
    if phases is not None:
        total, rows = phases
        print(f"\n--- phases of the batched rollout, kv_cache on (fastest of {args.repeats}: {total:.2f} s) ---")
        for name, seconds, positions in rows:
            print(f"{name:68s} {seconds:6.2f} s" + (f"   {positions:,} positions" if positions is not None else ""))


if __name__ == "__main__":
    main()
