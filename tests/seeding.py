"""A shared check that a rollout is reproducible from its seed."""


def assert_seeded(run, seed: int, other: int) -> None:
    """``run(seed)`` repeats its trajectories (token ids and log-probs) exactly, and ``run(other)`` differs."""
    first, again, different = run(seed), run(seed), run(other)
    assert [t.token_ids for t in first] == [t.token_ids for t in again]
    assert [t.logprobs for t in first] == [t.logprobs for t in again]
    assert [t.token_ids for t in first] != [t.token_ids for t in different]
