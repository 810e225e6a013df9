"""The Hugging Face engine: batched multimodal sampling with a per-episode KV cache, and log-probs of trajectories.

Sampling (default, ``kv_cache=True``): the engine keeps one batched ``DynamicCache`` whose rows are the live
episodes, from one turn to the next. A turn prefills only the tokens each episode added since its last turn
(the feedback turn with its new images; its own sampled turn is already in the cache), then decodes all rows
one token per step. Chunks are ragged, so a row's padding can sit in the middle of its cache; a 2-D attention
mask over the cache's columns marks it, and the rope positions are passed explicitly: for Qwen2.5-VL the 3-D
positions of each chunk come from the model's own ``get_rope_index``, shifted by where the episode's cached
tokens end (the same positions a fresh forward pass over the whole episode computes). Finished episodes leave
the cache with its batch-select; episodes are recognised by their ``TokenizedContext`` object, and the cache
is dropped once no episode in it is alive.

Without the cache (``kv_cache=False``): all live episodes go through one ``generate`` call over their whole
left-padded context, with ``pixel_values``/``image_grid_thw`` and ``mm_token_type_ids`` so that Qwen2.5-VL
computes its rope positions itself. Both paths stop a turn at the end-of-turn token (``<|im_end|>``) or at
``max_new_tokens``; ``seed`` fixes the sampling, so the same seed gives the same turns.

Which distribution the log-probs are under: ``log_softmax(raw_logits / T)`` at the sampled token, with the
special tokens the policy may never sample (image placeholders, chat markers; see
``ChatEncoder.suppressed_ids``) removed. That is the sampling distribution itself when ``top_p = 1``; with
``top_p < 1`` the nucleus truncation is not folded in (the usual choice in RL for LLMs). ``T = 0``
(greedy) scores under ``T = 1``. ``trajectory_logprobs`` computes exactly the same quantity from a fresh
forward pass, which is what the trainer's policy ratio needs.

Retokenization: a model may sample a token sequence that is not how its tokenizer would spell the text
(``"th" + "e"`` where ``"the"`` exists). With ``canonical_tokens`` on (the default) such a turn is kept as
the canonical ids of its text, scored with one more forward pass, and counted (``GeneratedTurn.retokenized``),
so that the recorded ids are exactly the chat template applied to the messages. Off, the sampled ids are
kept as they are. With the cache, the rescoring pass feeds the canonical ids from the first one that differs
from what was sampled, so the cache then holds exactly the episode's recorded ids.

Memory: the cache holds every live episode's keys and values (``layers x rows x columns``); the ``generate``
path instead keeps the raw logits of every step (``[batch, steps, vocab]``). Both are fine for the tiny model
and small real batches; use the vLLM engine for large batches of a 7B model.
"""

from __future__ import annotations

import functools
import inspect
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from mmsearch_r1.engines.base import Context, Engine, GeneratedTurn, first_of_each
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


# --- sampling and the cached path's bookkeeping (pure) -------------------------------------------------


def sample_next(logits: "torch.Tensor", temperature: float, top_p: float, suppressed_ids: Sequence[int], generator: "torch.Generator | None" = None) -> "torch.Tensor":
    """One token per row from ``softmax(logits / T)`` with ``suppressed_ids`` removed and the nucleus ``top_p`` kept.

    ``logits``: ``[batch, vocab]`` (raw); returns ``[batch]`` (long). ``temperature <= 0`` takes the argmax.
    The nucleus filter is transformers' ``TopPLogitsWarper``, the one ``generate`` applies.

    >>> import torch
    >>> sample_next(torch.tensor([[3.0, 2.0, 1.0]]), 0.0, 1.0, suppressed_ids=[0]).tolist()
    [1]
    """
    import torch
    from transformers.generation.logits_process import TopPLogitsWarper

    scores = logits.float() / (temperature if temperature > 0 else 1.0)  # a new tensor: safe to fill in place
    if len(suppressed_ids):
        scores.index_fill_(-1, torch.as_tensor(list(suppressed_ids), device=scores.device), float("-inf"))
    if temperature <= 0:
        return scores.argmax(dim=-1)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)
    # Inverse-CDF draw, written out because torch.multinomial took 3 ms per call at batch 128 (a fifth of a decode
    # step on a CPU) against 0.2 ms for this. Searching with right=True skips zero-probability tokens.
    probs = scores.softmax(dim=-1)
    cdf = probs.double().cumsum(dim=-1)  # [batch, vocab]
    u = torch.rand((probs.shape[0], 1), generator=generator, dtype=torch.float64, device=probs.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=probs.shape[-1] - 1)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two id sequences.

    >>> common_prefix([1, 2, 3], [1, 2, 4, 5]), common_prefix([1, 2], [1, 2, 3]), common_prefix([], [1])
    (2, 2, 0)
    """
    n = min(len(a), len(b))
    if list(a[:n]) == list(b[:n]):  # the usual case, compared in C
        return n
    return next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)


def outside_image(ids: Sequence[int], cut: int, image_token_id: int) -> int:
    """``cut`` moved back to the start of the image-placeholder run it would split (unchanged otherwise).

    A cache must hold an image's placeholder tokens all or none: the vision tower encodes an image whole.

    >>> outside_image([7, 9, 9, 9, 8], 2, 9), outside_image([7, 9, 9, 9, 8], 4, 9), outside_image([7, 9, 9, 9, 8], 1, 9)
    (1, 4, 1)
    """
    while 0 < cut < len(ids) and ids[cut - 1] == image_token_id and ids[cut] == image_token_id:
        cut -= 1
    return cut


def length_groups(lengths: Sequence[int], overhead: float) -> list[list[int]]:
    """Rows split into forward passes so that padded positions plus ``overhead`` per pass are fewest.

    Each pass pads its rows to its longest one. Rows are sorted by length and cut into runs by dynamic
    programming over that order (``O(rows^2)``, vectorised). Returns the passes' row indices, shortest first.

    >>> length_groups([5, 100, 6, 98], overhead=10)
    [[0, 2], [3, 1]]
    >>> length_groups([5, 100, 6, 98], overhead=1000)
    [[0, 2, 3, 1]]
    """
    import numpy as np

    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    width = np.array([lengths[i] for i in order], dtype=np.float64)
    best, cut = np.zeros(len(order) + 1), np.zeros(len(order) + 1, dtype=np.int64)
    for end in range(1, len(order) + 1):  # best[end]: the cheapest split of order[:end]; its last pass is order[start:end]
        costs = best[:end] + (end - np.arange(end)) * width[end - 1] + overhead
        cut[end] = int(np.argmin(costs))
        best[end] = costs[cut[end]]
    groups, end = [], len(order)
    while end > 0:
        groups.append(order[cut[end]:end])
        end = int(cut[end])
    return groups[::-1]


def _raw_bytes(tensor: "torch.Tensor") -> bytes:
    """The bytes of a tensor's values, any dtype (numpy has no bfloat16), to compare images exactly."""
    import torch

    return tensor.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes()


# --- batching -------------------------------------------------------------------------------------


def pad_batch(sequences: Sequence[Sequence[int]], pixel_values: Sequence[Any], grids: Sequence[Any], *, pad_id: int,
              image_token_id: int, left: bool, device: Any = "cpu") -> dict:
    """Model inputs for several token sequences, padded on the left (sampling, scoring a tail) or the right.

    ``pixel_values``/``grids`` are the images of all sequences in order. ``mm_token_type_ids`` marks the image
    tokens, so the model computes its 3-D rope positions the same way in sampling, scoring and pretraining.
    """
    import torch

    longest = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(longest - len(seq), longest) if left else slice(0, len(seq))
        input_ids[row, span] = torch.as_tensor(list(seq), dtype=torch.long)
        attention_mask[row, span] = 1
    inputs = {
        "input_ids": input_ids.to(device),
        "attention_mask": attention_mask.to(device),
        "mm_token_type_ids": (input_ids == image_token_id).long().to(device),
    }
    if len(pixel_values):
        inputs["pixel_values"] = torch.cat(list(pixel_values), dim=0).to(device)
        inputs["image_grid_thw"] = torch.stack(list(grids)).to(device)
    return inputs


def score_sequences(model: Any, encoder: ChatEncoder, sequences: Sequence[Sequence[int]], pixel_values: Sequence[Sequence[Any]], grids: Sequence[Sequence[Any]], temperature: float = 1.0, *, tail: int | None = None, masks: Sequence[Sequence[int]] | None = None) -> list["torch.Tensor"]:
    """Per-token log-probs of each sequence from one forward pass, differentiable.

    Returns one ``[len(seq)]`` tensor per sequence: entry t is ``log p(seq[t] | seq[:t])``, entry 0 is 0.
    ``pixel_values[i]``/``grids[i]`` are sequence i's images in order. With ``tail`` only the last ``tail``
    tokens of each sequence are scored (a left-padded batch whose output head runs on those positions
    only) and each tensor has ``min(tail, len(seq))`` entries; give sequences longer than ``tail`` (one of
    ``tail`` tokens or fewer has its first token scored after padding). With ``masks`` (0/1 per token, like a loss
    mask) only the tokens marked 1 are scored and the other entries are 0; the output head runs on those
    positions only where ``model`` is one whose forward is its body, then its head (``body_and_head``).
    """
    import torch

    if tail is not None and masks is not None:
        raise ValueError("score_sequences takes tail or masks, not both.")
    flat_pixels = [p for per in pixel_values for p in per]
    flat_grids = [g for per in grids for g in per]
    inputs = pad_batch(sequences, flat_pixels, flat_grids, pad_id=encoder.pad_id, image_token_id=encoder.image_token_id,
                       left=tail is not None, device=model.device)
    if masks is not None and body_and_head(model) is not None:
        return _score_marked(model, encoder, inputs, sequences, masks, temperature)
    if tail is not None:
        logits = model(**inputs, use_cache=False, logits_to_keep=tail + 1).logits  # [batch, tail + 1, vocab]
        scores = token_logprobs(logits[:, :-1], inputs["input_ids"][:, -tail:], temperature, encoder.suppressed_ids)
        return [scores[row, tail - min(tail, len(seq)):] for row, seq in enumerate(sequences)]
    logits = model(**inputs, use_cache=False).logits  # [batch, longest, vocab]
    scores = token_logprobs(logits[:, :-1], inputs["input_ids"][:, 1:], temperature, encoder.suppressed_ids)
    zero = torch.zeros(len(sequences), 1, device=scores.device, dtype=scores.dtype)
    scores = torch.cat([zero, scores], dim=1)  # [batch, longest]
    if masks is not None:  # a model scored by its own forward: the same zeros outside the marks (not a product: -inf * 0)
        marked = torch.zeros(scores.shape, dtype=torch.bool)
        for row, mask in enumerate(masks):
            marked[row, : len(mask)] = torch.as_tensor(list(mask), dtype=torch.bool)
        scores = scores.masked_fill(~marked.to(scores.device), 0.0)
    return [scores[row, : len(seq)] for row, seq in enumerate(sequences)]


def trajectory_logprobs(policy: "Policy", trajectories: Sequence["Trajectory"], temperature: float = 1.0, *, sampled_only: bool = False) -> list["torch.Tensor"]:
    """Per-token log-probs of whole trajectories under ``policy``: a fresh forward pass with all their images.

    One ``[len(token_ids)]`` tensor per trajectory, aligned with ``token_ids`` (entry 0 is 0); differentiable.
    Use the rollout's sampling temperature; multiply by ``loss_mask`` to keep the sampled tokens. With
    ``sampled_only`` only the tokens of the loss mask are scored (what a policy loss needs; the output head
    and its softmax run on a tenth of the positions of a typical episode) and the other entries are 0.
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
    masks = [t.loss_mask for t in trajectories] if sampled_only else None
    return score_sequences(policy.model, encoder, [t.token_ids for t in trajectories], pixel_values, grids, temperature, masks=masks)


# Model types whose ``forward`` is ``self.model`` (the body: input ids and images to last hidden states), then
# ``self.lm_head`` on the positions it keeps, and nothing after (checked in transformers 5.24). Others, such as
# models that scale or soft-cap their logits, are scored by their own forward.
BODY_THEN_HEAD = frozenset({"qwen2_5_vl", "qwen2_vl"})


def body_and_head(model: Any) -> tuple[Any, Any] | None:
    """The body and output head of a model of ``BODY_THEN_HEAD``, or None for any other model.

    A ``model`` attribute with a head of its own (a wrapper around a whole causal LM) is not a body.
    """
    if getattr(getattr(model, "config", None), "model_type", None) not in BODY_THEN_HEAD:
        return None
    body, head = getattr(model, "model", None), model.get_output_embeddings()
    if body is None or head is None or not hasattr(body, "get_output_embeddings") or body.get_output_embeddings() is not None:
        return None
    return body, head


def logits_at_marked(body_and_head: tuple[Any, Any], inputs: dict, marked: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
    """The body over the batch ``inputs``, then the head only at the positions that predict a ``marked`` token
    (``[batch, length]`` bool; column 0, which nothing predicts, must be False): the logits ``[marked, vocab]``
    and the rows and columns of the marked tokens, in row-major order. ``body_and_head``: as ``body_and_head``
    returns them."""
    body, head = body_and_head
    rows, columns = marked.nonzero(as_tuple=True)
    hidden = body(**inputs, use_cache=False)[0]  # [batch, longest, hidden]
    return head(hidden[rows, columns - 1]), rows, columns


def _score_marked(model: Any, encoder: ChatEncoder, inputs: dict, sequences: Sequence[Sequence[int]], masks: Sequence[Sequence[int]], temperature: float) -> list["torch.Tensor"]:
    """``score_sequences`` on the tokens ``masks`` marks: the body over the right-padded batch, the head on the
    positions that predict a marked token only."""
    import torch

    input_ids = inputs["input_ids"]
    marked = torch.zeros(input_ids.shape, dtype=torch.bool)
    for row, mask in enumerate(masks):
        marked[row, 1: len(mask)] = torch.as_tensor(list(mask[1:]), dtype=torch.bool)
    logits, rows, columns = logits_at_marked(body_and_head(model), inputs, marked.to(input_ids.device))
    scores = token_logprobs(logits, input_ids[rows, columns], temperature, encoder.suppressed_ids)
    out = torch.zeros(input_ids.shape, dtype=scores.dtype, device=scores.device).index_put((rows, columns), scores)
    return [out[row, : len(seq)] for row, seq in enumerate(sequences)]


# --- the KV cache kept between turns ---------------------------------------------------------------
#
# Written by hand: transformers' `generate` can continue one cache, but it has no way to extend a batch of
# caches that hold different lengths with chunks of different lengths (with new images in them), to drop
# or reorder episodes between calls, or to cut a row back to the ids a retokenized turn records.

# Padded positions one more forward pass must save before a prefill is split by chunk length: about the fixed
# cost of a pass (model and vision calls, copying its rows' cache) on the tiny model on a CPU; see docs/rollout.md.
PASS_OVERHEAD = 256


def chunk_positions(model: Any, ids: Sequence[int], grids: Sequence[Any], image_token_id: int, start: int) -> "torch.Tensor":
    """Qwen2.5-VL's 3-D rope positions (``[3, len(ids)]``) of ``ids`` continuing an episode at position ``start``.

    ``grids`` are the ``image_grid_thw`` of the images whose placeholders are in ``ids``. The model's own
    ``get_rope_index`` numbers a sequence from 0 and places every token relative to the running position
    (``1 +`` the largest position so far), so a chunk's positions inside an episode are its own positions
    shifted by ``start``; the integration tests check them against ``get_rope_index`` over the whole episode.
    """
    import torch

    device = model.device
    if image_token_id not in ids:
        return (torch.arange(len(ids), device=device) + start).expand(3, -1)
    input_ids = torch.tensor([list(ids)], device=device)
    grid = torch.stack(list(grids)).to(device) if len(grids) else None
    positions, _ = model.model.get_rope_index(input_ids, (input_ids == image_token_id).int(), image_grid_thw=grid)
    return positions[:, 0] + start


def cache_argument(model: Any) -> str:
    """The name ``model.forward`` takes its KV cache under: ``cache`` from transformers 5.24, ``past_key_values``
    before (5.24 still takes the old name, with a warning on every call, until 5.40)."""
    return _cache_argument(type(model))


@functools.cache
def _cache_argument(model_class: type) -> str:
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def _growing_layer_class():
    """``DynamicLayer`` with spare columns (built on first use: it subclasses a transformers class)."""
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        """A cache layer that keeps spare columns, so that a decode step writes its column in place.

        ``DynamicLayer`` concatenates (copies) the whole cache on every step; at batch 128 on a CPU that copy was
        half of a decode step. Keys and values stay views ``[rows, heads, columns, head_dim]`` of a larger buffer;
        when they are replaced from outside (batch select, compaction) the next update copies them into a new one.
        """

        spare = 64  # columns: one copy per 64 decode steps, and little memory beyond the cache itself

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            used, new = self.get_seq_length(), key_states.shape[-2]
            store = getattr(self, "_store", None)
            if store is None or store[2] is not self.keys or store[0].shape[-2] < used + new:
                store = self._grow(key_states, value_states, used, used + new + self.spare)
            keys, values = store[0], store[1]
            keys[:, :, used: used + new] = key_states
            values[:, :, used: used + new] = value_states
            self.keys, self.values = keys[:, :, : used + new], values[:, :, : used + new]
            self._store = (keys, values, self.keys)
            return self.keys, self.values

        def adopt(self, keys, values, used: int) -> None:
            """Take ``keys``/``values`` (``[rows, heads, capacity, head_dim]``) as the buffer, ``used`` columns filled."""
            self.lazy_initialization(keys, values)
            self.keys, self.values = keys[:, :, :used], values[:, :, :used]
            self._store = (keys, values, self.keys)

        def _grow(self, key_states, value_states, used: int, capacity: int) -> tuple:
            keys = key_states.new_empty((*key_states.shape[:2], capacity, key_states.shape[-1]))
            values = value_states.new_empty((*value_states.shape[:2], capacity, value_states.shape[-1]))
            if used:
                keys[:, :, :used], values[:, :, :used] = self.keys, self.values
            return keys, values, None

    return GrowingLayer


@dataclass
class CachedEpisode:
    """One row of the batched KV cache: whose it is and which tokens it holds."""

    owner: "weakref.ref"  # the episode's TokenizedContext, the same object on every turn of the episode
    ids: list[int] = field(default_factory=list)  # the tokens the row holds keys and values of, in order
    ends: list[int] = field(default_factory=list)  # ends[i]: the rope position that follows ids[: i + 1]


class EpisodeCache:
    """The live episodes' keys and values, kept from one turn to the next as one batched ``DynamicCache``.

    Row r of the cache belongs to ``rows[r]``. ``mask`` (``[rows, columns]``) is 1 on the columns that hold
    one of the row's tokens and 0 on padding, on tokens cut off by ``truncate`` and on the steps after the
    row's turn ended, so a row's padding can sit anywhere in it. The cache is dropped (``reset``) once every
    episode it holds has been garbage-collected, so it does not outlive a rollout.
    """

    def __init__(self, model: Any, pad_id: int):
        self.model, self.pad_id = model, pad_id
        self.reset()

    def reset(self) -> None:
        import torch

        self.cache: Any = None
        self.mask = torch.zeros((0, 0), dtype=torch.long, device=self.model.device)
        self.rows: list[CachedEpisode] = []
        self._parked: list[tuple] = []  # rows set aside during decoding: (rows, [(keys, values)] per layer, mask)
        self._order: list[CachedEpisode] | None = None  # the rows' order before the first park

    def _cache_kwarg(self) -> dict[str, Any]:
        return {cache_argument(self.model): self.cache}

    def _released(self, _ref: "weakref.ref") -> None:
        if not any(row.owner() is not None for row in self.rows):
            self.reset()

    @property
    def columns(self) -> int:
        return self.mask.shape[1]

    def align(self, owners: Sequence[Any]) -> None:
        """Order the rows as ``owners`` (episodes' ``TokenizedContext``): others leave, new ones get empty rows."""
        import torch

        index = {id(row.owner()): r for r, row in enumerate(self.rows) if row.owner() is not None}
        picks, seen = [], set()
        for owner in owners:
            r = index.get(id(owner))
            picks.append(r if r is not None and r not in seen else None)
            seen.add(r)
        new_rows = [self.rows[r] if r is not None else CachedEpisode(weakref.ref(o, self._released)) for o, r in zip(owners, picks)]
        if self.cache is None or all(r is None for r in picks):
            self.reset()
            self.cache = self._new_cache()
            self.mask = torch.zeros((len(owners), 0), dtype=torch.long, device=self.model.device)
        else:
            select = torch.tensor([r if r is not None else 0 for r in picks], device=self.model.device)
            self.cache.batch_select_indices(select)
            self.mask = self.mask[select]
            self.mask[torch.tensor([r is None for r in picks], device=self.model.device)] = 0
        self.rows = new_rows

    def truncate(self, r: int, keep: int) -> None:
        """Keep only the first ``keep`` tokens of row ``r`` (the others are masked out)."""
        row = self.rows[r]
        if keep < len(row.ids):
            column = int(self.mask[r].nonzero()[keep])
            self.mask[r, column:] = 0
            del row.ids[keep:], row.ends[keep:]

    def compact(self) -> None:
        """Drop the columns that no row uses (padding of episodes that left, cut-off tokens)."""
        used = self.mask.bool().any(dim=0)
        if self.cache is None or bool(used.all()):
            return
        for layer in self.cache.layers:  # DynamicLayer keeps [rows, heads, columns, head_dim] tensors
            if getattr(layer, "keys", None) is not None and layer.keys.numel():
                layer.keys, layer.values = layer.keys[:, :, used], layer.values[:, :, used]
        self.mask = self.mask[:, used]

    def extend_in_groups(self, groups: Sequence[Sequence[int]], chunks: Sequence[Sequence[int]], positions: Sequence["torch.Tensor"], images: Sequence[tuple], logits_to_keep: int) -> list["torch.Tensor"]:
        """``extend`` with the rows split into forward passes (``groups`` of row indices, e.g. from ``length_groups``).

        Each pass runs on a cache of its rows only; the results are stacked back in row order, each group's new
        columns padded (masked) to the widest. Returns per row its logits ``[logits_to_keep, vocab]``.
        """
        import torch

        if len(groups) == 1:
            return list(self.extend(chunks, positions, images, logits_to_keep))
        kv = [(layer.keys, layer.values) for layer in self.cache.layers] if self.columns else []
        mask, rows, parts, logits = self.mask, self.rows, [], [None] * len(chunks)
        for group in groups:
            index = torch.tensor(list(group), device=mask.device)
            self.cache, self.mask, self.rows = self._new_cache([(k[index], v[index]) for k, v in kv]), mask[index], [rows[i] for i in group]
            out = self.extend([chunks[i] for i in group], [positions[i] for i in group], [images[i] for i in group], logits_to_keep)
            parts.append((self.rows, [(layer.keys, layer.values) for layer in self.cache.layers], self.mask))
            for i, row_logits in zip(group, out):
                logits[i] = row_logits
        self._stack(parts, rows)
        return logits

    def _new_cache(self, kv: Sequence[tuple] = ()) -> Any:
        """A ``DynamicCache`` of ``GrowingLayer``s, holding ``kv`` (per layer ``(keys, values)``) when given."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        cache.layers = [_growing_layer_class()() for _ in cache.layers]
        for layer, (keys, values) in zip(cache.layers, kv):
            layer.update(keys, values)
        return cache

    def extend(self, chunks: Sequence[Sequence[int]], positions: Sequence["torch.Tensor"], images: Sequence[tuple], logits_to_keep: int) -> "torch.Tensor":
        """Run each row's new ``chunks`` (left-padded to one length) through the model after what the row holds.

        ``positions[r]``: ``[3, len(chunks[r])]``; ``images[r]``: ``(pixel_values, image_grid_thw)`` lists of the
        images whose placeholders are in ``chunks[r]``. Returns the logits of the last ``logits_to_keep``
        columns, ``[rows, logits_to_keep, vocab]``.
        """
        import torch

        device, width = self.model.device, max(len(c) for c in chunks)
        input_ids = torch.full((len(chunks), width), self.pad_id, dtype=torch.long, device=device)
        new_mask = torch.zeros((len(chunks), width), dtype=torch.long, device=device)
        position_ids = torch.zeros((3, len(chunks), width), dtype=torch.long, device=device)
        for r, (chunk, pos) in enumerate(zip(chunks, positions)):
            if chunk:
                input_ids[r, width - len(chunk):] = torch.tensor(list(chunk), device=device)
                new_mask[r, width - len(chunk):] = 1
                position_ids[:, r, width - len(chunk):] = pos
                self.rows[r].ids.extend(chunk)
                self.rows[r].ends.extend((pos.max(dim=0).values.cummax(dim=0).values + 1).tolist())
        pixel_values = [p for row_pixels, _ in images for p in row_pixels]
        grids = [g for _, row_grids in images for g in row_grids]
        vision = {"pixel_values": torch.cat(pixel_values).to(device), "image_grid_thw": torch.stack(grids).to(device)} if pixel_values else {}
        self.mask = torch.cat([self.mask, new_mask], dim=1)
        out = self.model(input_ids=input_ids, attention_mask=self.mask, position_ids=position_ids, use_cache=True,
                         logits_to_keep=logits_to_keep, **self._cache_kwarg(), **vision)
        return out.logits

    def step(self, tokens: "torch.Tensor", live: "torch.Tensor") -> "torch.Tensor":
        """Append one token per row (``[rows]``; kept where ``live``, masked out elsewhere); the next logits ``[rows, vocab]``."""
        import torch

        ids, alive = tokens.tolist(), live.tolist()
        nexts = [row.ends[-1] if row.ends else 0 for row in self.rows]
        for row, token, position, on in zip(self.rows, ids, nexts, alive):
            if on:
                row.ids.append(token)
                row.ends.append(position + 1)
        position_ids = torch.tensor(nexts, device=self.model.device).view(1, -1, 1).expand(3, -1, -1)
        self.mask = torch.cat([self.mask, live.long().unsqueeze(1)], dim=1)
        out = self.model(input_ids=tokens.unsqueeze(1), attention_mask=self.mask, position_ids=position_ids, use_cache=True,
                         **self._cache_kwarg())
        return out.logits[:, -1]

    def park(self, keep: "torch.Tensor") -> None:
        """Set aside the rows where ``keep`` (``[rows]``, bool) is False, whose turn is over, so that decode steps
        run on the others only; ``unpark`` puts them back in their order."""
        import torch

        if self._order is None:
            self._order = list(self.rows)
        out, stay = (~keep).nonzero().squeeze(1), keep.nonzero().squeeze(1)
        kv = [(layer.keys[out], layer.values[out]) for layer in self.cache.layers]
        self._parked.append(([self.rows[i] for i in out.tolist()], kv, self.mask[out]))
        self.cache.batch_select_indices(stay)
        self.rows, self.mask = [self.rows[i] for i in stay.tolist()], self.mask[stay]

    def unpark(self) -> None:
        """Bring the parked rows back, in the order they had before ``park``."""
        if self._parked:
            current = (self.rows, [(layer.keys, layer.values) for layer in self.cache.layers], self.mask)
            self._stack([current, *self._parked], self._order)
            self._parked, self._order = [], None

    def _stack(self, groups: Sequence[tuple], order: Sequence[CachedEpisode]) -> None:
        """Make the cache the rows of ``groups`` (each ``(rows, [(keys, values)] per layer, mask)``) in ``order``.

        Groups can differ in width (parked rows miss the columns added since, a group's new chunk is narrower);
        each gets masked zero columns on the right up to the widest, as a row's columns only need to keep their
        order. Every group is copied once, straight into its rows of a new buffer with spare columns.
        """
        import torch

        width = max(mask.shape[1] for _, _, mask in groups)
        where = {id(row): i for i, row in enumerate(order)}
        destinations = [torch.tensor([where[id(row)] for row in rows], device=self.mask.device) for rows, _, _ in groups]
        self.mask = self.mask.new_zeros((len(order), width))
        for destination, (_, _, mask) in zip(destinations, groups):
            self.mask[destination, : mask.shape[1]] = mask
        self.cache = self._new_cache()
        for i, layer in enumerate(self.cache.layers):
            keys, values = groups[0][1][i]
            shape = (len(order), keys.shape[1], width + layer.spare, keys.shape[3])
            key_buffer, value_buffer = keys.new_zeros(shape), values.new_zeros(shape)  # zeros: masked columns must hold finite values
            for destination, (_, kv, _) in zip(destinations, groups):
                key_buffer[destination, :, : kv[i][0].shape[2]] = kv[i][0]
                value_buffer[destination, :, : kv[i][1].shape[2]] = kv[i][1]
            layer.adopt(key_buffer, value_buffer, width)
        self.rows = list(order)


# --- the engine -----------------------------------------------------------------------------------


class HFEngine(Engine):
    """Samples turns from a ``Policy`` (model + processor): per-episode KV cache (default) or ``generate``.

    ``kv_cache=False`` uses transformers' ``generate`` over each whole context (also the path for models
    without Qwen2-VL's ``get_rope_index``). ``cached_episodes`` says how many episodes the cache holds.
    """

    def __init__(self, policy: "Policy", *, canonical_tokens: bool = True, kv_cache: bool = True):
        self.policy = policy
        self.encoder = ChatEncoder(policy.processor)
        self.canonical_tokens = canonical_tokens
        self.kv_cache = kv_cache and hasattr(getattr(policy.model, "model", None), "get_rope_index")
        self._cache: EpisodeCache | None = None

    @property
    def cached_episodes(self) -> int:
        """Episodes whose keys and values the engine holds now (0 once their rollout is over)."""
        return 0 if self._cache is None else sum(row.owner() is not None for row in self._cache.rows)

    def close(self) -> None:
        self._cache = None

    def generate(self, contexts: list[Context], sampling: "SamplingConfig", *, seed: int | None = None) -> list[GeneratedTurn]:
        if not contexts:
            return []
        if any(c.tokens is None for c in contexts):
            raise ValueError("the Hugging Face engine needs tokenized contexts; run it through mmsearch_r1.rollout.")
        model = self.policy.model
        if not self.kv_cache or (model.training and getattr(model, "is_gradient_checkpointing", False)):
            # (a model training with gradient checkpointing drops every cache it is given)
            sampled, logprobs = self._sample(contexts, sampling, seed)
            turns = [self._turn(c, ids, lps) for c, ids, lps in zip(contexts, sampled, logprobs)]
            self._rescore([t for t in turns if t.retokenized], [c for c, t in zip(contexts, turns) if t.retokenized], sampling)
            return turns
        import torch

        try:
            with torch.no_grad():
                sampled, logprobs = self._sample_cached(contexts, sampling, seed)
                turns = [self._turn(c, ids, lps) for c, ids, lps in zip(contexts, sampled, logprobs)]
                self._rescore_cached(contexts, turns, sampled, sampling)
        except BaseException:
            self._cache = None  # a half-updated cache is worth nothing; the next call prefills from scratch
            raise
        return turns

    # --- the cached path ---

    def _sample_cached(self, contexts: list[Context], sampling: "SamplingConfig", seed: int | None) -> tuple[list[list[int]], list[list[float]]]:
        """Prefill what each episode added since its last turn, then decode: the new ids of each row and their log-probs."""
        import torch

        if self._cache is None:
            self._cache = EpisodeCache(self.policy.model, self.encoder.pad_id)
        self._cache.align([c.tokens for c in contexts])
        targets = [c.tokens.token_ids for c in contexts]
        logits = torch.stack([scores[-1] for scores in self._feed(contexts, targets, [len(t) for t in targets])])  # [batch, vocab]
        generator = torch.Generator(device=self.policy.model.device)
        if seed is not None:
            generator.manual_seed(seed)
        else:
            generator.seed()
        return self._decode(logits, sampling, generator)

    def _decode(self, logits: "torch.Tensor", sampling: "SamplingConfig", generator: "torch.Generator") -> tuple[list[list[int]], list[list[float]]]:
        """Sample every cache row one token per step from ``logits`` (``[rows, vocab]``, the prefill's last)."""
        import torch

        cache, encoder = self._cache, self.encoder
        sampled: list[list[int]] = [[] for _ in cache.rows]
        logprobs: list[list[float]] = [[] for _ in cache.rows]
        rows = list(range(len(cache.rows)))  # the context of each row the decode steps run on
        live = torch.ones(len(rows), dtype=torch.bool, device=logits.device)
        for step in range(sampling.max_new_tokens):
            tokens = sample_next(logits, sampling.temperature, sampling.top_p, encoder.suppressed_ids, generator)
            tokens = tokens.masked_fill(~live, encoder.pad_id)
            scores = token_logprobs(logits, tokens, sampling.temperature, encoder.suppressed_ids)
            for row, token, score, on in zip(rows, tokens.tolist(), scores.tolist(), live.tolist()):
                if on:
                    sampled[row].append(token)
                    logprobs[row].append(score)
            ended = tokens == encoder.end_of_turn_id
            if step + 1 == sampling.max_new_tokens or not bool((live & ~ended).any()):
                break  # the last sampled tokens go into the cache with the episode's next chunk
            logits = cache.step(tokens, live)
            live = live & ~ended
            if int((~live).sum()) * 4 >= len(rows):  # a quarter of the rows are done: step on the others only
                cache.park(live)
                logits, rows = logits[live], [row for row, on in zip(rows, live.tolist()) if on]
                live = live[live]
        cache.unpark()
        return sampled, logprobs

    def _feed(self, contexts: list[Context], targets: list[list[int]], score_from: list[int]) -> list["torch.Tensor"]:
        """Bring each cache row to ``targets[r]`` (the episode's ids, whose images are ``contexts[r]``'s).

        A row keeps the longest prefix of ``targets[r]`` it already holds, at most ``score_from[r] - 1`` tokens
        so that the logits predicting ``targets[r][score_from[r]:]`` get computed; the rest of every row runs
        through the model batched (split into passes by chunk length where that saves padding). Returns per row
        those logits, ``[len(target) - score_from + 1, vocab]`` (the last one predicts the token after the target).
        """
        cache, image_id = self._cache, self.encoder.image_token_id
        chunks, positions, images = [], [], []
        for r, (context, target, first) in enumerate(zip(contexts, targets, score_from)):
            row = cache.rows[r]
            keep = outside_image(target, min(common_prefix(row.ids, target), first - 1), image_id)
            cache.truncate(r, keep)
            held = self._whole_images(target[:keep].count(image_id), context.tokens.image_grid_thw)
            images.append((context.tokens.pixel_values[held:], context.tokens.image_grid_thw[held:]))
            chunks.append(target[keep:])
            positions.append(chunk_positions(self.policy.model, chunks[-1], images[-1][1], image_id, row.ends[-1] if row.ends else 0))
        cache.compact()
        wanted = [len(t) - first + 1 for t, first in zip(targets, score_from)]
        if cache.columns == 0:  # a fresh cache (first turns): episodes of the same prompt (a GRPO group) share one prefill
            return self._feed_distinct(chunks, positions, images, wanted)
        groups = length_groups([len(c) for c in chunks], overhead=PASS_OVERHEAD)
        logits = cache.extend_in_groups(groups, chunks, positions, images, max(wanted))
        return [row_logits[row_logits.shape[0] - n:] for row_logits, n in zip(logits, wanted)]

    def _feed_distinct(self, chunks: list[list[int]], positions: list, images: list[tuple], wanted: list[int]) -> list["torch.Tensor"]:
        """``_feed``'s forward pass on a fresh cache, run once per distinct chunk (ids and image pixels) and copied to its rows."""
        import torch

        cache = self._cache
        keys = [(tuple(chunk), tuple(_raw_bytes(p) for p in pixels)) for chunk, (pixels, _) in zip(chunks, images)]
        firsts, place = first_of_each(keys)
        rows = cache.rows
        cache.rows, cache.mask = [rows[i] for i in firsts], cache.mask[firsts]
        groups = length_groups([len(chunks[i]) for i in firsts], overhead=PASS_OVERHEAD)
        logits = cache.extend_in_groups(groups, [chunks[i] for i in firsts], [positions[i] for i in firsts], [images[i] for i in firsts], max(wanted))
        if len(firsts) < len(rows):
            for row, p in zip(rows, place):
                row.ids, row.ends = list(cache.rows[p].ids), list(cache.rows[p].ends)
            index = torch.tensor(place, device=cache.mask.device)
            cache.cache.batch_select_indices(index)
            cache.mask = cache.mask[index]
        cache.rows = rows
        return [logits[p][logits[p].shape[0] - n:] for p, n in zip(place, wanted)]

    def _whole_images(self, placeholders: int, grids: Sequence[Any]) -> int:
        """How many of an episode's images (in order) the first ``placeholders`` image tokens cover."""
        merge = self.policy.model.config.vision_config.spatial_merge_size
        covered = count = 0
        for grid in grids:
            if covered >= placeholders:
                break
            covered += int(grid.prod()) // merge**2
            count += 1
        return count

    def _rescore_cached(self, contexts: list[Context], turns: list[GeneratedTurn], sampled: list[list[int]], sampling: "SamplingConfig") -> None:
        """Log-probs of retokenized turns through the cache, which then holds their canonical ids.

        The canonical ids that agree with what was sampled keep their sampled log-probs (same tokens, same
        context); the rest are scored from one forward pass over the retokenized rows only (the others are
        parked), starting one token before the first difference.
        """
        import torch

        redo = [i for i, turn in enumerate(turns) if turn.retokenized]
        if not redo:
            return
        cache = self._cache
        if len(redo) < len(turns):
            cache.park(torch.tensor([turn.retokenized for turn in turns], device=cache.mask.device))
        contexts, turns, sampled = [contexts[i] for i in redo], [turns[i] for i in redo], [sampled[i] for i in redo]
        targets = [c.tokens.token_ids + t.token_ids for c, t in zip(contexts, turns)]
        first = [len(c.tokens.token_ids) + common_prefix(ids, t.token_ids) for c, t, ids in zip(contexts, turns, sampled)]
        for context, turn, target, start, logits in zip(contexts, turns, targets, first, self._feed(contexts, targets, first)):
            tail = torch.tensor(target[start:], device=logits.device)
            scores = token_logprobs(logits[:-1], tail, sampling.temperature, self.encoder.suppressed_ids).tolist()
            values = turn.logprobs[: start - len(context.tokens.token_ids)] + scores
            turn.logprobs = [v if m else 0.0 for v, m in zip(values, turn.loss_mask)]
        cache.unpark()

    # --- the generate path ---

    def _sample(self, contexts: list[Context], sampling: "SamplingConfig", seed: int | None) -> tuple[list[list[int]], list[list[float]]]:
        """One ``generate`` call for the batch: the new ids of each row and their log-probs."""
        import torch
        from transformers import GenerationConfig

        model, encoder = self.policy.model, self.encoder
        tokens = [c.tokens for c in contexts]
        pixels = [p for t in tokens for p in t.pixel_values]
        grids = [g for t in tokens for g in t.image_grid_thw]
        inputs = pad_batch([t.token_ids for t in tokens], pixels, grids, pad_id=encoder.pad_id, image_token_id=encoder.image_token_id,
                           left=True, device=model.device)
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
