"""An offline tokenizer for the tiny policy: byte-level BPE trained on our own text, Qwen's chat tokens.

The chat special tokens are those of Qwen2.5-VL (``<|im_start|>``, ``<|im_end|>``, ``<|vision_start|>``,
``<|image_pad|>``, ...), so the same rollout code and chat template work for the tiny model and a real
checkpoint. The protocol tags (``<reason>``, ``<answer>``, ...) are added as *non-special* tokens: each one
is a single token, yet they stay plain text (decoding with ``skip_special_tokens=True`` keeps them).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

CHAT_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)
PROTOCOL_TOKENS = (
    "<reason>", "</reason>", "<answer>", "</answer>", "<search>", "<img>", "</search>",
    "<text_search>", "</text_search>", "<information>", "</information>",
)

# Qwen-style ChatML: each message is <|im_start|>role\n...<|im_end|>\n; an image content part is rendered
# as <|vision_start|><|image_pad|><|vision_end|> (the processor expands <|image_pad|> to one token per
# merged patch). Written for this project; no default system message is inserted.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in part %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Text every tokenizer sees besides the caller's, so the prompts, tags and digits always have merges.
_BASE_TEXT = (
    "system user assistant Question: Answer the question about the image. I cannot answer this question. "
    "The results show This is unknown to me. This is it, and I know it. This is it, but I know little of it. Answer. Search images. Look it up. "
    "0 1 2 3 4 5 6 7 8 9 "
    "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ . , ; : ! ? ( ) - ' \" / http:// https:// .com"
)


def _protocol_texts() -> list[str]:
    from mmsearch_r1.protocol import Templates

    templates = Templates.load()
    return [templates.system, templates.user_prompt, templates.image_results, templates.text_results, templates.tool_error]


def build_tokenizer(texts: Iterable[str], out_dir: str | Path | None = None, vocab_size: int = 2048) -> "PreTrainedTokenizerFast":
    """Train a byte-level BPE tokenizer on ``texts`` (plus our prompt templates), wrap it for transformers.

    The result has the Qwen chat special tokens, ``<|im_end|>`` as end of turn, ``<|endoftext|>`` as
    padding, the protocol tags as single non-special tokens, and a Qwen-style chat template. It is saved
    to ``out_dir`` when given.

    >>> tok = build_tokenizer(["Zorblat is red."] * 20, vocab_size=400)
    >>> tok.tokenize("<reason>x</reason><answer>red</answer>")[:3]
    ['<reason>', 'x', '</reason>']
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(CHAT_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [_BASE_TEXT, *_protocol_texts(), *texts]
    core.train_from_iterator(corpus, trainer, length=len(corpus) if isinstance(texts, (list, tuple)) else None)
    core.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in PROTOCOL_TOKENS])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=[t for t in CHAT_SPECIAL_TOKENS if t not in ("<|im_end|>", "<|endoftext|>")],
        model_max_length=131072,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    if out_dir is not None:
        tokenizer.save_pretrained(str(out_dir))
    return tokenizer
