"""The update step on a stand-in policy: a learnable categorical over a 6-token vocabulary (no model).

Each trajectory's log-probs are ``log_softmax(logits)[token]``, so the gradients can be reasoned about by hand.
"""

import copy
from types import SimpleNamespace

import pytest
import torch

from mmsearch_r1.config import load_config
from mmsearch_r1.train import trainer
from mmsearch_r1.train.grpo import group_advantages, group_index
from mmsearch_r1.trajectory import Message, Trajectory


class Categorical(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.zeros(6))


def _logprobs(policy, trajectories, temperature):
    table = torch.log_softmax(policy.model.logits, dim=-1)
    return [table[torch.tensor(t.token_ids)] for t in trajectories]


@pytest.fixture(autouse=True)
def stand_in_logprobs(monkeypatch):
    monkeypatch.setattr(trainer, "_trajectory_logprobs", _logprobs)


def _trajectory(group, tokens, mask):
    return Trajectory(sample_id=group, group_id=group, messages=[Message("assistant", ["x"])], token_ids=tokens,
                      loss_mask=mask, logprobs=[0.0] * len(tokens), images=[], actions=["answer"], end_reason="answer")


def _batch():
    # token 0 is the "prompt" (masked out); rewarded episodes sample token 1, unrewarded ones token 2
    trajectories = [
        _trajectory("a", [0, 1, 1], [0, 1, 1]), _trajectory("a", [0, 2], [0, 1]),
        _trajectory("b", [0, 1], [0, 1]), _trajectory("b", [0, 2, 2, 2], [0, 1, 1, 1]),
    ]
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0])
    return trajectories, group_advantages(rewards, group_index([t.group_id for t in trajectories]))


def _run(micro_batch_size, **overrides):
    tc = load_config(None, [f"train.micro_batch_size={micro_batch_size}", "train.lr=0.1", "train.weight_decay=0.0",
                            *[f"train.{k}={v}" for k, v in overrides.items()]]).train
    policy = SimpleNamespace(model=Categorical())
    reference = SimpleNamespace(model=copy.deepcopy(policy.model).requires_grad_(False))
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    trajectories, advantages = _batch()
    stats = trainer.policy_update(policy, reference, optimizer, trajectories, advantages, tc)
    return policy.model.logits.detach(), stats


def test_update_raises_rewarded_token_and_lowers_unrewarded_one():
    logits, stats = _run(4)
    probs = torch.softmax(logits, -1)
    assert probs[1] > 1 / 6 > probs[2]
    assert probs[0].item() == pytest.approx(probs[3].item())  # tokens never sampled move together
    assert stats.kl == 0.0 and stats.clip_fraction == 0.0  # first pass: policy equals reference and old policy
    assert stats.entropy == pytest.approx(torch.log(torch.tensor(6.0)).item(), abs=1e-6)  # uniform start: -log(1/6)
    assert stats.grad_norm > 0


def test_micro_batches_give_the_same_update_as_one_batch():
    whole, stats_whole = _run(4)
    for size in (1, 3):
        split, stats_split = _run(size)
        torch.testing.assert_close(split, whole)
        assert stats_split.policy_loss == pytest.approx(stats_whole.policy_loss, abs=1e-7)
        assert stats_split.grad_norm == pytest.approx(stats_whole.grad_norm, rel=1e-6)


def test_micro_batches_run_longest_first_and_logprobs_come_back_in_batch_order():
    trajectories, _ = _batch()  # lengths 3, 2, 2, 4
    assert trainer._by_length([0, 1, 2, 3], trajectories) == [3, 0, 1, 2]
    policy = SimpleNamespace(model=Categorical())
    with torch.no_grad():
        policy.model.logits.copy_(torch.arange(6.0))  # every token a different log-prob
    rows = trainer._logprobs(policy, trajectories, 3, "cpu", 1.0)
    torch.testing.assert_close(rows, trainer._pad(_logprobs(policy, trajectories, 1.0)))


def test_loss_is_a_token_mean_over_the_whole_batch():
    # 7 sampled tokens; advantages +-0.7071 per group; with ratio 1 the loss is -sum(A * 1 * mask) / 7
    _, stats = _run(2)
    a = 0.5 / (0.5**0.5 + 1e-6)
    expected = -(2 * a - 1 * a + 1 * a - 3 * a) / 7
    assert stats.policy_loss == pytest.approx(expected, abs=1e-6)


def test_several_passes_clip_and_move_away_from_the_reference():
    _, stats = _run(2, ppo_epochs=4, mini_batches=2, clip_ratio=0.05)
    assert stats.kl > 0.0
    assert stats.clip_fraction > 0.0
