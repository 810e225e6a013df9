"""Pure parts of the Hugging Face engine's cached sampling path: prefix matching, image cuts, token sampling."""

from __future__ import annotations

import torch

from mmsearch_r1.engines.hf import common_prefix, first_of_each, length_groups, outside_image, sample_next


def test_common_prefix():
    assert common_prefix([5, 6, 7], [5, 6, 7, 8]) == 3
    assert common_prefix([5, 6, 7, 8], [5, 6, 7]) == 3
    assert common_prefix([5, 9, 7], [5, 6, 7]) == 1
    assert common_prefix([], [1, 2]) == 0
    assert common_prefix([3], [4]) == 0


def test_outside_image_never_splits_a_placeholder_run():
    ids = [1, 2, 9, 9, 9, 3, 9, 9, 4]  # 9: image placeholder; two images
    assert outside_image(ids, 3, 9) == 2 and outside_image(ids, 4, 9) == 2
    assert outside_image(ids, 7, 9) == 6
    for cut in (0, 1, 2, 5, 6, 8, 9):  # at a boundary already: unchanged
        assert outside_image(ids, cut, 9) == cut


def test_sample_next_greedy_skips_suppressed_ids():
    logits = torch.tensor([[5.0, 4.0, 1.0], [0.0, 1.0, 2.0]])
    assert sample_next(logits, 0.0, 1.0, []).tolist() == [0, 2]
    assert sample_next(logits, 0.0, 1.0, [0, 2]).tolist() == [1, 1]


def test_sample_next_never_draws_suppressed_or_outside_the_nucleus():
    # probabilities 0.7, 0.2, 0.1: top_p 0.6 keeps token 0 only; suppressing 0 leaves 1 and 2
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]])).expand(500, 3)
    generator = torch.Generator().manual_seed(0)
    assert set(sample_next(logits, 1.0, 0.6, [], generator).tolist()) == {0}
    drawn = sample_next(logits, 1.0, 1.0, [0], generator)
    assert set(drawn.tolist()) == {1, 2}
    assert 0.55 < (drawn == 1).float().mean() < 0.8  # p(1 | not 0) = 2/3


def test_sample_next_draws_each_token_at_its_probability():
    probs = torch.tensor([0.0, 0.5, 0.0, 0.3, 0.2, 0.0])
    logits = torch.log(probs).expand(20000, 6)  # -inf where the probability is 0
    drawn = sample_next(logits, 1.0, 1.0, [], torch.Generator().manual_seed(3))
    counts = torch.bincount(drawn, minlength=6).float() / len(drawn)
    assert counts[[0, 2, 5]].sum() == 0
    assert torch.allclose(counts, probs, atol=0.015)  # about 4 standard errors


def test_sample_next_is_reproducible_from_the_generator_seed():
    logits = torch.randn(64, 50)
    draw = lambda seed: sample_next(logits, 0.8, 0.9, [3], torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(draw(1), draw(1))
    assert not torch.equal(draw(1), draw(2))


def test_first_of_each():
    assert first_of_each([]) == ([], [])
    assert first_of_each([(1, 2), (3,), (1, 2), (1, 2)]) == ([0, 1], [0, 1, 0, 0])


def test_length_groups_trades_padding_for_passes():
    lengths = [10, 300, 12, 290, 11]
    assert length_groups(lengths, overhead=10_000) == [[0, 4, 2, 3, 1]]  # one pass: 5 x 300 positions
    assert length_groups(lengths, overhead=100) == [[0, 4, 2], [3, 1]]  # 3 x 12 + 2 x 300 + 2 passes
    assert length_groups(lengths, overhead=0) == [[0], [4], [2], [3], [1]]
    assert sorted(i for group in length_groups(lengths, overhead=50) for i in group) == [0, 1, 2, 3, 4]


def test_the_cache_goes_under_the_name_the_installed_model_takes():
    """transformers 5.24 renamed ``past_key_values`` to ``cache`` (the old name warns on every call until 5.40)."""
    import inspect

    from transformers import Qwen2_5_VLForConditionalGeneration

    from mmsearch_r1.engines.hf import cache_argument

    class Old:
        def forward(self, input_ids=None, past_key_values=None, use_cache=None): ...

    name = cache_argument(Qwen2_5_VLForConditionalGeneration.__new__(Qwen2_5_VLForConditionalGeneration))
    assert name in inspect.signature(Qwen2_5_VLForConditionalGeneration.forward).parameters
    assert cache_argument(Old()) == "past_key_values"
