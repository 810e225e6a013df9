"""GRPO math: group-relative advantages, the clipped policy loss over masked tokens, KL to a reference, entropy.

Pure functions of tensors; no model, no I/O. Shapes: ``B`` trajectories, ``T`` tokens (padded), ``V`` vocab.
Every per-token tensor is ``[B, T]`` and comes with a ``loss_mask`` ``[B, T]`` that is 1 exactly on tokens the
policy sampled (see ``mmsearch_r1.trajectory``); everything else is ignored.

Where this departs from the paper (arXiv 2506.20670) and the published veRL recipe, and why:

- Loss aggregation is a token mean (``sum(loss · mask) / sum(mask)``), as in the recipe's veRL, not the
  per-sequence mean of the original GRPO paper: long multi-turn episodes are not down-weighted per token.
  veRL takes the mean per micro-batch and averages the micro-batches; we divide by the token count of the
  whole optimizer batch (``token_count``), so the update does not depend on how the batch is split.
- The KL term is added to the loss (the "low-variance" k3 estimator, as in veRL's ``low_var_kl``), not to the
  reward. Like veRL we clamp the log-ratio to ±20 and the per-token value to ±10 so one wild token cannot
  blow up a step; the clamp never binds for a policy near its reference.
- The group std is the unbiased (Bessel-corrected) one, as veRL's GRPO advantage uses; a group of one has
  std 1 and advantage 0. Groups whose rewards are all equal get advantage 0 (nothing to learn from them).
  ``normalize_std=False`` gives the mean-only variant (Dr. GRPO), which does not up-weight easy groups.
- The reported entropy is the exact entropy of the next-token distribution when logits are available
  (``entropy_from_logits``); the trainer, which only sees sampled-token log-probs, reports the Monte-Carlo
  estimate ``-mean(log π(sampled token))`` (``sampled_entropy``), whose expectation is the same entropy.
  Neither is part of the loss (the recipe's entropy coefficient is 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

KL_LOG_RATIO_CLAMP = 20.0
KL_VALUE_CLAMP = 10.0


def group_index(group_ids: Sequence[str]) -> torch.Tensor:
    """Map group labels to dense integer ids ``[B]`` in order of first appearance.

    >>> group_index(["q7", "q7", "q2", "q7"]).tolist()
    [0, 0, 1, 0]
    """
    seen: dict[str, int] = {}
    return torch.tensor([seen.setdefault(g, len(seen)) for g in group_ids], dtype=torch.long)


def group_advantages(
    rewards: torch.Tensor, groups: torch.Tensor, *, normalize_std: bool = True, eps: float = 1e-6
) -> torch.Tensor:
    """Group-relative advantages ``[B]`` of scalar rewards ``[B]`` (``groups`` ``[B]``: dense group ids).

    ``A_i = (r_i - mean_g) / (std_g + eps)`` over the trajectories ``g`` of the same prompt, with the unbiased
    std; ``A_i = r_i - mean_g`` when ``normalize_std`` is False. A group of one has advantage 0.

    >>> r = torch.tensor([1.0, 0.0, 0.5, 0.5])
    >>> [round(a, 4) for a in group_advantages(r, torch.tensor([0, 0, 1, 1])).tolist()]
    [0.7071, -0.7071, 0.0, 0.0]
    """
    rewards = rewards.to(torch.float64)
    n_groups = int(groups.max()) + 1 if groups.numel() else 0
    count = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, groups, torch.ones_like(rewards))
    total = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, groups, rewards)
    mean = total / count
    centered = rewards - mean[groups]
    if not normalize_std:
        return centered.to(torch.float32)
    squares = torch.zeros(n_groups, dtype=torch.float64).index_add_(0, groups, centered**2)
    var = torch.where(count > 1, squares / (count - 1).clamp(min=1), torch.ones_like(count))
    return (centered / (var.sqrt()[groups] + eps)).to(torch.float32)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, token_count: float | None = None) -> torch.Tensor:
    """Token mean ``sum(values · mask) / token_count`` (default ``sum(mask)``) over ``[B, T]``; a scalar.

    Pass the token count of the whole batch to make micro-batch losses add up to the batch loss.

    >>> masked_mean(torch.tensor([[1.0, 2.0], [3.0, 9.0]]), torch.tensor([[1, 1], [1, 0]]))
    tensor(2.)
    """
    keep = mask.bool()
    denom = keep.sum().to(values.dtype) if token_count is None else torch.tensor(float(token_count), dtype=values.dtype)
    # where, not a product: a masked-out value may be ±inf (a token the policy may never sample), and inf·0 is NaN.
    return torch.where(keep, values, torch.zeros_like(values)).sum() / denom.clamp(min=1.0)


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    clip_ratio: float = 0.2,
    clip_ratio_high: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO-clip loss per token ``[B, T]`` and where the clip is active ``[B, T]`` (bool).

    ``ρ = exp(logπ - logπ_old)``; ``loss = max(-A·ρ, -A·clip(ρ, 1-ε, 1+ε_high))`` with the sequence advantage
    ``A`` ``[B]`` broadcast over its tokens; ``ε_high`` defaults to ``ε``. The clip is active where the
    clipped term is the larger one (its gradient is then zero).

    >>> loss, clipped = clipped_policy_loss(torch.log(torch.tensor([[1.5, 0.9]])), torch.zeros(1, 2), torch.tensor([2.0]))
    >>> loss.tolist(), clipped.tolist()
    ([[-2.4000000953674316, -1.7999999523162842]], [[True, False]])
    """
    high = clip_ratio if clip_ratio_high is None else clip_ratio_high
    ratio = torch.exp(logprobs - old_logprobs)
    adv = advantages.to(logprobs.dtype).unsqueeze(-1)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_ratio, 1.0 + high)
    return torch.maximum(unclipped, clipped), clipped > unclipped


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Low-variance KL estimate per token ``[B, T]`` of π from the reference (Schulman's k3).

    With ``x = logπ_ref - logπ`` on the sampled token: ``k3 = exp(x) - x - 1`` (≥ 0, unbiased for KL(π‖π_ref)
    under samples from π). ``x`` is clamped to ±20 and the result to ±10.

    >>> kl_k3(torch.tensor([[0.0, -1.0]]), torch.tensor([[0.0, 0.0]])).tolist()
    [[0.0, 0.7182817459106445]]
    """
    x = torch.clamp(ref_logprobs - logprobs, -KL_LOG_RATIO_CLAMP, KL_LOG_RATIO_CLAMP)
    return torch.clamp(torch.exp(x) - x - 1.0, -KL_VALUE_CLAMP, KL_VALUE_CLAMP)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy ``[B, T]`` of the next-token distributions given by ``logits`` ``[B, T, V]``.

    ``H = logsumexp(z) - Σ softmax(z)·z``.

    >>> round(entropy_from_logits(torch.zeros(1, 1, 4)).item(), 6)  # uniform over 4: ln 4
    1.386294
    """
    logits = logits.float()
    return torch.logsumexp(logits, dim=-1) - (torch.softmax(logits, dim=-1) * logits).sum(dim=-1)


def sampled_entropy(logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Monte-Carlo entropy estimate (a scalar): ``-mean(log π(sampled token))`` over masked tokens ``[B, T]``."""
    return -masked_mean(logprobs, mask)


@dataclass
class GRPOLoss:
    """The loss of one (micro-)batch and its parts; ``loss`` carries gradients, the rest are detached floats."""

    loss: torch.Tensor
    policy_loss: float
    kl: float
    clip_fraction: float
    entropy: float


def grpo_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor | None,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    clip_ratio: float = 0.2,
    clip_ratio_high: float | None = None,
    kl_coef: float = 0.001,
    token_count: float | None = None,
) -> GRPOLoss:
    """GRPO loss ``token_mean(clip loss) + β · token_mean(k3 KL)`` over ``[B, T]`` tensors and advantages ``[B]``.

    ``ref_logprobs`` may be None when ``kl_coef`` is 0. ``token_count`` is the masked-token count of the whole
    batch when this is one micro-batch of it (the reported parts are then this micro-batch's share too).

    >>> lp = torch.zeros(1, 2, requires_grad=True)
    >>> out = grpo_loss(lp, torch.zeros(1, 2), None, torch.tensor([1.0]), torch.ones(1, 2), kl_coef=0.0)
    >>> out.loss.item(), out.clip_fraction
    (-1.0, 0.0)
    """
    # Positions outside the mask may hold -inf (prompt tokens the policy may never sample); zero them first so
    # that neither the loss nor its gradient sees them.
    outside = ~loss_mask.bool()
    logprobs, old_logprobs = logprobs.masked_fill(outside, 0.0), old_logprobs.masked_fill(outside, 0.0)
    if ref_logprobs is not None:
        ref_logprobs = ref_logprobs.masked_fill(outside, 0.0)
    per_token, clipped = clipped_policy_loss(logprobs, old_logprobs, advantages, clip_ratio, clip_ratio_high)
    policy = masked_mean(per_token, loss_mask, token_count)
    loss = policy
    kl_value = 0.0
    if ref_logprobs is not None:
        kl = masked_mean(kl_k3(logprobs, ref_logprobs), loss_mask, token_count)
        loss = loss + kl_coef * kl
        kl_value = kl.item()
    elif kl_coef > 0:
        raise ValueError("grpo_loss needs ref_logprobs when kl_coef > 0.")
    return GRPOLoss(
        loss=loss,
        policy_loss=policy.item(),
        kl=kl_value,
        clip_fraction=masked_mean(clipped.float(), loss_mask, token_count).item(),
        entropy=masked_mean(-logprobs.detach(), loss_mask, token_count).item(),
    )
