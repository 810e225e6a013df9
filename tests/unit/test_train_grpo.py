"""GRPO math against numbers computed by hand."""

import math

import pytest
import torch

from mmsearch_r1.train.grpo import (
    clipped_policy_loss,
    entropy_from_logits,
    group_advantages,
    group_index,
    grpo_loss,
    kl_k3,
    masked_mean,
    sampled_entropy,
)


def test_group_index_is_dense_in_first_seen_order():
    assert group_index(["b", "a", "b", "c", "a"]).tolist() == [0, 1, 0, 2, 1]


def test_group_advantages_by_hand():
    # group 0: rewards 1, 0, 0, 1 -> mean 0.5, unbiased var = 4 * 0.25 / 3 = 1/3, std = 0.57735
    # group 1: rewards 0.9, 0.1, 0.2 -> mean 0.4, centered 0.5, -0.3, -0.2, var = (0.25+0.09+0.04)/2 = 0.19
    rewards = torch.tensor([1.0, 0.9, 0.0, 0.1, 0.0, 1.0, 0.2])
    groups = torch.tensor([0, 1, 0, 1, 0, 0, 1])
    adv = group_advantages(rewards, groups, eps=0.0)
    s0, s1 = math.sqrt(1 / 3), math.sqrt(0.19)
    expected = [0.5 / s0, 0.5 / s1, -0.5 / s0, -0.3 / s1, -0.5 / s0, 0.5 / s0, -0.2 / s1]
    assert adv.tolist() == pytest.approx(expected, abs=1e-6)
    assert adv.dtype == torch.float32


def test_group_advantages_mean_only():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.9, 0.1, 0.2])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    adv = group_advantages(rewards, groups, normalize_std=False)
    assert adv.tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5, 0.5, -0.3, -0.2], abs=1e-6)


def test_all_equal_groups_get_zero_advantage_not_nan():
    rewards = torch.tensor([0.1, 0.1, 0.1, 1.0, 1.0, 1.0])
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    for normalize_std in (True, False):
        adv = group_advantages(rewards, groups, normalize_std=normalize_std)
        assert torch.isfinite(adv).all()
        assert adv.abs().max().item() == 0.0


def test_group_of_one_gets_zero_advantage():
    adv = group_advantages(torch.tensor([0.7, 1.0, 0.0]), torch.tensor([0, 1, 1]))
    assert adv[0].item() == 0.0
    assert adv[1].item() == pytest.approx(0.5 / math.sqrt(0.5), rel=1e-5)  # mean 0.5, unbiased var 0.5


def test_masked_mean_and_batch_token_count():
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[0, 1, 1], [1, 0, 0]])
    assert masked_mean(values, mask).item() == pytest.approx((2 + 3 + 4) / 3)
    # two micro-batches normalised by the whole batch's token count add up to the batch mean
    parts = masked_mean(values[:1], mask[:1], token_count=3) + masked_mean(values[1:], mask[1:], token_count=3)
    assert parts.item() == pytest.approx(3.0)


def test_clipped_policy_loss_by_hand():
    # ratios: 1.5, 0.5, 1.1 for A=+1 ; 1.5, 0.5, 1.1 for A=-2 ; eps 0.2
    old = torch.zeros(2, 3)
    logprobs = torch.log(torch.tensor([[1.5, 0.5, 1.1], [1.5, 0.5, 1.1]]))
    adv = torch.tensor([1.0, -2.0])
    loss, clipped = clipped_policy_loss(logprobs, old, adv, clip_ratio=0.2)
    # A=+1: max(-1.5, -1.2) = -1.2 (clipped), max(-0.5, -0.8) = -0.5, max(-1.1, -1.1) = -1.1
    # A=-2: max(3.0, 2.4) = 3.0, max(1.0, 1.6) = 1.6 (clipped), max(2.2, 2.2) = 2.2
    assert loss.flatten().tolist() == pytest.approx([-1.2, -0.5, -1.1, 3.0, 1.6, 2.2], abs=1e-6)
    assert clipped.tolist() == [[True, False, False], [False, True, False]]


def test_clip_ratio_high_widens_upper_bound_only():
    loss, clipped = clipped_policy_loss(torch.log(torch.tensor([[1.25, 0.7]])), torch.zeros(1, 2), torch.tensor([1.0]),
                                        clip_ratio=0.2, clip_ratio_high=0.28)
    assert loss.flatten().tolist() == pytest.approx([-1.25, -0.7], abs=1e-6)
    assert clipped.tolist() == [[False, False]]


def test_clipped_tokens_get_no_gradient():
    logprobs = torch.log(torch.tensor([[1.5, 1.0]])).requires_grad_(True)
    loss, _ = clipped_policy_loss(logprobs, torch.zeros(1, 2), torch.tensor([1.0]))
    loss.sum().backward()
    # d(-ratio)/d logprob = -ratio = -1 on the unclipped token, 0 on the clipped one
    assert logprobs.grad.flatten().tolist() == pytest.approx([0.0, -1.0])


def test_kl_k3_by_hand():
    logprobs = torch.tensor([[-1.0, -2.0, -0.5]])
    ref = torch.tensor([[-1.0, -1.0, -1.5]])
    # x = ref - logp = 0, 1, -1 ; k3 = e^x - x - 1
    expected = [0.0, math.e - 2.0, math.exp(-1) + 1 - 1]
    assert kl_k3(logprobs, ref).tolist()[0] == pytest.approx(expected, abs=1e-6)
    assert (kl_k3(torch.randn(4, 5), torch.randn(4, 5)) >= 0).all()


def test_kl_k3_is_clamped():
    assert kl_k3(torch.tensor([[-100.0]]), torch.tensor([[0.0]])).item() == 10.0


def test_entropy_from_logits():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [1.0, 1e-30, 1e-30]]]))
    h = entropy_from_logits(logits)
    assert h.shape == (1, 2)
    assert h[0, 0].item() == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)), abs=1e-6)
    assert h[0, 1].item() == pytest.approx(0.0, abs=1e-5)


def test_sampled_entropy_is_negative_mean_logprob_over_mask():
    logprobs = torch.tensor([[-1.0, -3.0], [-2.0, -100.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    assert sampled_entropy(logprobs, mask).item() == pytest.approx(2.0)


def test_grpo_loss_combines_policy_and_kl_by_hand():
    logprobs = torch.log(torch.tensor([[1.5, 1.0, 0.3]])).requires_grad_(True)
    old = torch.zeros(1, 3)
    ref = torch.zeros(1, 3)
    mask = torch.tensor([[1, 1, 0]])
    out = grpo_loss(logprobs, old, ref, torch.tensor([1.0]), mask, clip_ratio=0.2, kl_coef=0.5)
    policy = (-1.2 + -1.0) / 2
    x = -math.log(1.5)  # ref - logp on token 0; token 1 has x = 0
    kl = (math.exp(x) - x - 1) / 2
    assert out.policy_loss == pytest.approx(policy, abs=1e-6)
    assert out.kl == pytest.approx(kl, abs=1e-6)
    assert out.loss.item() == pytest.approx(policy + 0.5 * kl, abs=1e-6)
    assert out.clip_fraction == pytest.approx(0.5)
    assert out.entropy == pytest.approx(-math.log(1.5) / 2, abs=1e-6)
    out.loss.backward()
    assert logprobs.grad[0, 2].item() == 0.0  # masked token gets no gradient


def test_grpo_loss_requires_reference_when_kl_is_on():
    with pytest.raises(ValueError):
        grpo_loss(torch.zeros(1, 1), torch.zeros(1, 1), None, torch.ones(1), torch.ones(1, 1), kl_coef=0.1)


def test_grpo_loss_ignores_infinite_values_outside_the_mask():
    # prompt tokens the policy may never sample score -inf; they sit outside the mask and must not poison anything
    logprobs = torch.tensor([[float("-inf"), -1.0, -2.0]], requires_grad=True)
    old = torch.tensor([[float("-inf"), -1.0, -2.0]])
    ref = torch.tensor([[float("-inf"), -1.5, -2.0]])
    mask = torch.tensor([[0, 1, 1]])
    out = grpo_loss(logprobs, old, ref, torch.tensor([1.0]), mask, kl_coef=0.1)
    out.loss.backward()
    assert math.isfinite(out.loss.item()) and math.isfinite(out.entropy) and math.isfinite(out.kl)
    assert torch.isfinite(logprobs.grad).all()
    assert logprobs.grad[0, 0].item() == 0.0
    assert out.entropy == pytest.approx(1.5)
    assert masked_mean(torch.tensor([[float("inf"), 2.0]]), torch.tensor([[0, 1]])).item() == 2.0
