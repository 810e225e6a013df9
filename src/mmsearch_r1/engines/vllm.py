"""The vLLM engine: in-process vLLM on a GPU, fed the episode's own token ids and images.

Needs the ``gpu`` extra (``pip install -e .[gpu]``); importing this module works without vLLM, building
the engine without it raises ``EngineError``. Each context goes in as ``prompt_token_ids`` (the episode's
ledger, image placeholders already expanded by the policy's processor) plus its images as
``multi_modal_data``; vLLM recognises the expanded placeholders and does not expand them again. One
``LLM.generate`` call serves the whole batch. Turns stop at ``<|im_end|>``; the special tokens the policy
may never sample get a logit bias of -100.

Log-probs: vLLM reports ``processed_logprobs`` here (after temperature and nucleus truncation), which is
close to, but not exactly, what ``engines.hf.trajectory_logprobs`` recomputes (temperature only). A
trainer that needs the two to agree to 1e-4 should recompute the behaviour log-probs with the policy it
trains, as veRL does. Retokenized turns (see ``engines.hf``) are scored as vLLM prompt log-probs (raw,
temperature 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mmsearch_r1.engines.base import Context, Engine, EngineError, GeneratedTurn
from mmsearch_r1.engines.chat import ChatEncoder, sampled_turn

if TYPE_CHECKING:
    from mmsearch_r1.engines.config import EngineConfig, SamplingConfig


def load_processor(folder: str | Path):
    """The policy's processor (tokenizer, chat template, image settings) without loading its weights."""
    import json

    from transformers import AutoTokenizer

    from mmsearch_r1.models.policy import _chat_template, build_processor

    folder = Path(folder)
    settings_file = folder / "preprocessor_config.json"
    settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
    return build_processor(AutoTokenizer.from_pretrained(str(folder)), settings, _chat_template(folder))


def _supports_logprobs_mode() -> bool:
    import dataclasses

    from vllm.engine.arg_utils import EngineArgs

    return "logprobs_mode" in {f.name for f in dataclasses.fields(EngineArgs)}


class VLLMEngine(Engine):
    """Samples turns with vLLM's offline ``LLM`` from a policy folder in Hugging Face layout."""

    def __init__(self, model_path: str | Path, cfg: "EngineConfig"):
        try:
            from vllm import LLM
        except ImportError:
            raise EngineError("the vllm engine needs vLLM on a GPU machine; install the gpu extra (pip install -e .[gpu]) or use engine.type=hf.") from None
        self.encoder = ChatEncoder(load_processor(model_path))
        self.canonical_tokens = cfg.canonical_tokens
        options = dict(
            model=str(model_path), gpu_memory_utilization=cfg.vllm.gpu_memory_utilization, max_model_len=cfg.vllm.max_model_len,
            tensor_parallel_size=cfg.vllm.tensor_parallel_size, limit_mm_per_prompt={"image": cfg.vllm.max_images_per_prompt},
            dtype=cfg.dtype or "auto",
        )
        if _supports_logprobs_mode():
            options["logprobs_mode"] = "processed_logprobs"  # older vLLM reports raw (temperature 1) log-probs
        self.llm = LLM(**options)

    def generate(self, contexts: list[Context], sampling: "SamplingConfig", *, seed: int | None = None) -> list[GeneratedTurn]:
        from vllm import SamplingParams

        if not contexts:
            return []
        encoder = self.encoder
        prompts = [{"prompt_token_ids": list(c.tokens.token_ids), "multi_modal_data": {"image": list(c.images)}} for c in contexts]
        params = [
            SamplingParams(
                temperature=sampling.temperature, top_p=sampling.top_p if sampling.temperature > 0 else 1.0,
                max_tokens=sampling.max_new_tokens, stop_token_ids=[encoder.end_of_turn_id], logprobs=0,
                seed=None if seed is None else seed + i, skip_special_tokens=False,
                logit_bias={i: -100.0 for i in encoder.suppressed_ids} or None,
            )
            for i in range(len(contexts))
        ]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        turns = [self._turn(context, out.outputs[0]) for context, out in zip(contexts, outputs)]
        self._rescore([t for t in turns if t.retokenized], [c for c, t in zip(contexts, turns) if t.retokenized])
        return turns

    def _turn(self, context: Context, completion) -> GeneratedTurn:
        ids = list(completion.token_ids)
        logprobs = [float(step[token].logprob) for step, token in zip(completion.logprobs or [], ids)]
        stopped = bool(ids) and ids[-1] == self.encoder.end_of_turn_id
        return sampled_turn(self.encoder, context, ids, logprobs, stopped=stopped, canonical_tokens=self.canonical_tokens)

    def _rescore(self, turns: list[GeneratedTurn], contexts: list[Context]) -> None:
        """Log-probs of retokenized turns as vLLM prompt log-probs of context + canonical span (raw, T = 1)."""
        from vllm import SamplingParams

        if not turns:
            return
        prompts = [
            {"prompt_token_ids": list(c.tokens.token_ids) + t.token_ids, "multi_modal_data": {"image": list(c.images)}}
            for c, t in zip(contexts, turns)
        ]
        outputs = self.llm.generate(prompts, SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)
        for turn, out in zip(turns, outputs):
            steps = out.prompt_logprobs[-len(turn.token_ids):]
            turn.logprobs = [float(step[tok].logprob) if m else 0.0 for step, tok, m in zip(steps, turn.token_ids, turn.loss_mask)]

    def close(self) -> None:
        self.llm = None
