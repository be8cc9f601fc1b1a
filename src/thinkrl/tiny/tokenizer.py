"""The tiny default's tokenizer: one token per character, plus the reasoning tags.

Characters keep arithmetic visible to a small model (no multi-digit tokens to memorise),
and a char vocabulary round-trips any text made of its characters exactly. The four tags
are single ordinary (non-special) tokens, so they survive `decode(skip_special_tokens=True)`.
"""

from __future__ import annotations

import string
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, processors
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
TAGS = ("<think>", "</think>", "<answer>", "</answer>")
CHARS = string.digits + string.ascii_letters + " \n+-*/=()[]{}<>.,:;!?'\"%$#&_^|\\~`@"

# Renders messages the way the tiny model was pretrained: `User: {prompt}. Assistant:`.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }} "
    "{% elif message['role'] == 'user' %}User: {{ message['content'] }}. "
    "{% else %}Assistant:{{ message['content'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A fresh character-level fast tokenizer (bos added in front of every text, like Llama)."""
    specials = [PAD, BOS, EOS, UNK]
    vocab = {tok: i for i, tok in enumerate(specials)}
    for ch in CHARS:
        vocab[ch] = len(vocab)
    # A BPE with no merges splits text into single characters; no pre-tokenizer, so spaces
    # and newlines are ordinary characters, and Fuse joins tokens back with nothing between.
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    core.decoder = decoders.Fuse()
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    core.add_tokens([AddedToken(t, special=False, normalized=False, single_word=False,
                                lstrip=False, rstrip=False) for t in TAGS])
    bos_id = core.token_to_id(BOS)
    core.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A $B",
                                                        special_tokens=[(BOS, bos_id)])
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
        chat_template=CHAT_TEMPLATE, clean_up_tokenization_spaces=False, model_max_length=512,
        padding_side="left",
    )


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, folder: Path) -> None:
    tokenizer.save_pretrained(str(folder))
