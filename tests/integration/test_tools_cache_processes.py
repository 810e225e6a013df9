"""Several processes hammer one cache folder with the same keys: nothing lost, nothing corrupted."""

import multiprocessing as mp
import random

from mmsearch_r1.tools.base import TextHit, TextSearch
from mmsearch_r1.tools.cache import CachedTextSearch, SearchCache

KEYS = 40
CALLS = 150
WORKERS = 4


class Deterministic(TextSearch):
    """The answer depends only on the query, so every process must read back the same hits."""

    name = "deterministic"

    def search(self, query, k=5):
        return [TextHit(f"{query} title {i}", f"http://u/{query}/{i}", f"summary of {query} " * 20, score=float(i)) for i in range(k)]


def worker(directory: str, seed: int, mode: str, out: "mp.Queue") -> None:
    cached = CachedTextSearch(Deterministic(), SearchCache(directory, mode=mode))
    rng = random.Random(seed)
    bad = 0
    for _ in range(CALLS):
        query = f"q{rng.randrange(KEYS)}"
        if cached.search(query, k=3) != Deterministic().search(query, k=3):
            bad += 1
    out.put(bad)


def run_workers(directory, mode):
    context = mp.get_context("fork")
    out = context.Queue()
    processes = [context.Process(target=worker, args=(str(directory), seed, mode, out)) for seed in range(WORKERS)]
    for p in processes:
        p.start()
    bad = [out.get(timeout=120) for _ in processes]
    for p in processes:
        p.join(timeout=60)
    assert all(p.exitcode == 0 for p in processes)
    return bad


def test_concurrent_processes_share_one_cache_without_loss(tmp_path):
    assert run_workers(tmp_path, "use") == [0] * WORKERS
    cache = SearchCache(tmp_path)
    stats = cache.stats()
    assert stats.entries == KEYS  # every key present exactly once
    assert stats.hits + stats.misses == WORKERS * CALLS  # no lost counter increments
    assert stats.live_calls == stats.misses >= KEYS
    # record mode: all processes overwrite the same keys at once; readers then see intact values.
    assert run_workers(tmp_path, "record") == [0] * WORKERS
    assert run_workers(tmp_path, "replay") == [0] * WORKERS
    assert SearchCache(tmp_path).stats().entries == KEYS
