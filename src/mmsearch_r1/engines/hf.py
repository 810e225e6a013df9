"""The Hugging Face engine: batched multimodal sampling with ``generate``, and log-probs of trajectories.

Sampling: all live episodes of a turn go through one ``generate`` call, left-padded, with their images as
``pixel_values``/``image_grid_thw`` and ``mm_token_type_ids`` so that Qwen2.5-VL computes its 3-D rope
positions (``get_rope_index``) from the same inputs at sampling and at scoring. A turn stops at the
end-of-turn token (``<|im_end|>``) or at ``max_new_tokens``. ``seed`` seeds torch's generator for the
call (in a forked RNG state), so the same seed gives the same turns.

Which distribution the log-probs are under: ``log_softmax(raw_logits / T)`` at the sampled token, with the
special tokens the policy may never sample (image placeholders, chat markers; see
``ChatEncoder.suppressed_ids``) removed. That is the sampling distribution itself when ``top_p = 1``; with
``top_p < 1`` the nucleus truncation is not folded in (the usual choice in RL for LLMs). ``T = 0``
(greedy) scores under ``T = 1``. ``trajectory_logprobs`` computes exactly the same quantity from a fresh
forward pass, which is what the trainer's policy ratio needs.

Retokenization: a model may sample a token sequence that is not how its tokenizer would spell the text
(``"th" + "e"`` where ``"the"`` exists). With ``canonical_tokens`` on (the default) such a turn is kept as
the canonical ids of its text, scored with one forward pass, and counted (``GeneratedTurn.retokenized``),
so that the recorded ids are exactly the chat template applied to the messages. Off, the sampled ids are
kept as they are.

Memory: ``generate`` returns the raw logits of every step (``[batch, steps, vocab]``); fine for the tiny
model and small real batches; use the vLLM engine for large batches of a 7B model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from mmsearch_r1.engines.base import Context, Engine, GeneratedTurn
from mmsearch_r1.engines.chat import ChatEncoder, sampled_turn

if TYPE_CHECKING:
    import torch

    from mmsearch_r1.engines.config import SamplingConfig
    from mmsearch_r1.models import Policy
    from mmsearch_r1.trajectory import Trajectory


# --- pure math ------------------------------------------------------------------------------------


def token_logprobs(logits: "torch.Tensor", token_ids: "torch.Tensor", temperature: float = 1.0, suppressed_ids: Sequence[int] = ()) -> "torch.Tensor":
    """Log-probability of each token under ``softmax(logits / T)`` with ``suppressed_ids`` removed.

    ``logits``: ``[..., vocab]``; ``token_ids``: ``[...]`` (long); returns ``[...]`` in float32.
    ``temperature <= 0`` (greedy) counts as 1.

    >>> import torch
    >>> logits = torch.log(torch.tensor([[0.5, 0.25, 0.25]]))
    >>> token_logprobs(logits, torch.tensor([1])).exp().round(decimals=4).tolist()
    [0.25]
    >>> token_logprobs(logits, torch.tensor([1]), suppressed_ids=[0]).exp().round(decimals=4).tolist()
    [0.5]
    """
    import torch

    scaled = logits.float() / (temperature if temperature > 0 else 1.0)  # a new tensor: safe to fill in place
    if len(suppressed_ids):
        scaled.index_fill_(-1, torch.as_tensor(list(suppressed_ids), device=scaled.device), float("-inf"))
    # gather - logsumexp: the same as log_softmax(...).gather(...) without a second vocabulary-sized tensor
    return scaled.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(scaled, dim=-1)


def cut_at_end_of_turn(ids: Sequence[int], end_of_turn_id: int) -> tuple[list[int], bool]:
    """The ids up to and including the first end-of-turn token, and whether there was one.

    >>> cut_at_end_of_turn([5, 6, 2, 0, 0], 2), cut_at_end_of_turn([5, 6], 2)
    (([5, 6, 2], True), ([5, 6], False))
    """
    ids = list(ids)
    if end_of_turn_id in ids:
        return ids[: ids.index(end_of_turn_id) + 1], True
    return ids, False


# --- batching -------------------------------------------------------------------------------------


def _batch(encoder: ChatEncoder, sequences: Sequence[Sequence[int]], pixel_values: Sequence[Any], grids: Sequence[Any], *, left: bool, device: Any) -> dict:
    """Model inputs for several token sequences, padded on the left (sampling) or right (scoring)."""
    import torch

    longest = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), longest), encoder.pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(longest - len(seq), longest) if left else slice(0, len(seq))
        input_ids[row, span] = torch.as_tensor(list(seq), dtype=torch.long)
        attention_mask[row, span] = 1
    inputs = {
        "input_ids": input_ids.to(device),
        "attention_mask": attention_mask.to(device),
        "mm_token_type_ids": (input_ids == encoder.image_token_id).long().to(device),
    }
    if len(pixel_values):
        inputs["pixel_values"] = torch.cat(list(pixel_values), dim=0).to(device)
        inputs["image_grid_thw"] = torch.stack(list(grids)).to(device)
    return inputs


def score_sequences(model: Any, encoder: ChatEncoder, sequences: Sequence[Sequence[int]], pixel_values: Sequence[Sequence[Any]], grids: Sequence[Sequence[Any]], temperature: float = 1.0, *, tail: int | None = None) -> list["torch.Tensor"]:
    """Per-token log-probs of each sequence from one forward pass, differentiable.

    Returns one ``[len(seq)]`` tensor per sequence: entry t is ``log p(seq[t] | seq[:t])``, entry 0 is 0.
    ``pixel_values[i]``/``grids[i]`` are sequence i's images in order. With ``tail`` only the last ``tail``
    tokens of each sequence are scored (a left-padded batch whose output head runs on those positions
    only) and each tensor has ``min(tail, len(seq))`` entries.
    """
    import torch

    flat_pixels = [p for per in pixel_values for p in per]
    flat_grids = [g for per in grids for g in per]
    inputs = _batch(encoder, sequences, flat_pixels, flat_grids, left=tail is not None, device=model.device)
    if tail is not None:
        logits = model(**inputs, use_cache=False, logits_to_keep=tail + 1).logits  # [batch, tail + 1, vocab]
        scores = token_logprobs(logits[:, :-1], inputs["input_ids"][:, -tail:], temperature, encoder.suppressed_ids)
        return [scores[row, tail - min(tail, len(seq)):] for row, seq in enumerate(sequences)]
    logits = model(**inputs, use_cache=False).logits  # [batch, longest, vocab]
    scores = token_logprobs(logits[:, :-1], inputs["input_ids"][:, 1:], temperature, encoder.suppressed_ids)
    zero = torch.zeros(len(sequences), 1, device=scores.device, dtype=scores.dtype)
    scores = torch.cat([zero, scores], dim=1)  # [batch, longest]
    return [scores[row, : len(seq)] for row, seq in enumerate(sequences)]


def trajectory_logprobs(policy: "Policy", trajectories: Sequence["Trajectory"], temperature: float = 1.0) -> list["torch.Tensor"]:
    """Per-token log-probs of whole trajectories under ``policy``: a fresh forward pass with all their images.

    One ``[len(token_ids)]`` tensor per trajectory, aligned with ``token_ids`` (entry 0 is 0); differentiable.
    Use the rollout's sampling temperature; multiply by ``loss_mask`` to keep the sampled tokens.
    """
    encoder = ChatEncoder(policy.processor)
    pixel_values, grids = [], []
    for trajectory in trajectories:
        if trajectory.images:
            processed = policy.processor.image_processor(images=list(trajectory.images), return_tensors="pt")
            counts = processed["image_grid_thw"].prod(-1).tolist()
            pixel_values.append(list(processed["pixel_values"].split(counts, dim=0)))
            grids.append(list(processed["image_grid_thw"]))
        else:
            pixel_values.append([])
            grids.append([])
    return score_sequences(policy.model, encoder, [t.token_ids for t in trajectories], pixel_values, grids, temperature)


# --- the engine -----------------------------------------------------------------------------------


class HFEngine(Engine):
    """Samples turns from a ``Policy`` (model + processor) with transformers' ``generate``."""

    def __init__(self, policy: "Policy", *, canonical_tokens: bool = True):
        self.policy = policy
        self.encoder = ChatEncoder(policy.processor)
        self.canonical_tokens = canonical_tokens

    def generate(self, contexts: list[Context], sampling: "SamplingConfig", *, seed: int | None = None) -> list[GeneratedTurn]:
        if not contexts:
            return []
        sampled, logprobs = self._sample(contexts, sampling, seed)
        turns = [self._turn(c, ids, lps) for c, ids, lps in zip(contexts, sampled, logprobs)]
        self._rescore([t for t in turns if t.retokenized], [c for c, t in zip(contexts, turns) if t.retokenized], sampling)
        return turns

    def _sample(self, contexts: list[Context], sampling: "SamplingConfig", seed: int | None) -> tuple[list[list[int]], list[list[float]]]:
        """One ``generate`` call for the batch: the new ids of each row and their log-probs."""
        import torch
        from transformers import GenerationConfig

        model, encoder = self.policy.model, self.encoder
        tokens = [c.tokens for c in contexts]
        if any(t is None for t in tokens):
            raise ValueError("the Hugging Face engine needs tokenized contexts; run it through mmsearch_r1.rollout.")
        pixels = [p for t in tokens for p in t.pixel_values]
        grids = [g for t in tokens for g in t.image_grid_thw]
        inputs = _batch(encoder, [t.token_ids for t in tokens], pixels, grids, left=True, device=model.device)
        greedy = sampling.temperature <= 0
        config = GenerationConfig(
            do_sample=not greedy, temperature=None if greedy else sampling.temperature, top_p=None if greedy else sampling.top_p,
            top_k=None if greedy else 0, repetition_penalty=1.0, max_new_tokens=sampling.max_new_tokens, eos_token_id=encoder.end_of_turn_id,
            pad_token_id=encoder.pad_id, suppress_tokens=encoder.suppressed_ids or None, output_logits=True,
            return_dict_in_generate=True,
        )
        devices = [model.device] if model.device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            if seed is not None:
                torch.manual_seed(seed)
            out = model.generate(**inputs, generation_config=config)
        new = out.sequences[:, inputs["input_ids"].shape[1]:]  # [batch, steps]
        logits = torch.stack(out.logits, dim=1)  # [batch, steps, vocab], raw
        scores = token_logprobs(logits, new, sampling.temperature, encoder.suppressed_ids)
        return new.tolist(), scores.tolist()

    def _turn(self, context: Context, new_ids: list[int], new_logprobs: list[float]) -> GeneratedTurn:
        ids, stopped = cut_at_end_of_turn(new_ids, self.encoder.end_of_turn_id)
        return sampled_turn(self.encoder, context, ids, new_logprobs[: len(ids)], stopped=stopped, canonical_tokens=self.canonical_tokens)

    def _rescore(self, turns: list[GeneratedTurn], contexts: list[Context], sampling: "SamplingConfig") -> None:
        """Log-probs of retokenized turns from one forward pass over context + canonical span."""
        import torch

        if not turns:
            return
        sequences = [c.tokens.token_ids + t.token_ids for c, t in zip(contexts, turns)]
        with torch.no_grad():
            scores = score_sequences(
                self.policy.model, self.encoder, sequences, [c.tokens.pixel_values for c in contexts],
                [c.tokens.image_grid_thw for c in contexts], sampling.temperature, tail=max(len(t.token_ids) for t in turns),
            )
        for turn, score in zip(turns, scores):
            values = score[-len(turn.token_ids):].tolist()
            turn.logprobs = [v if m else 0.0 for v, m in zip(values, turn.loss_mask)]
