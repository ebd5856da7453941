"""Tiny character-level tokenizers and Llama models, built locally (tests and benchmarks).

No hub downloads: the tokenizer comes from the ``tokenizers`` library, the model from a config.
"""

from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

SPECIALS = ["<pad>", "<unk>", "<s>", "</s>"]
DEFAULT_CHARS = string.printable.replace("\x0b", "").replace("\x0c", "")
# Writes the BOS token itself, as Llama's templates do (the text is then tokenised without
# add_special_tokens, so BOS appears once); the user's content follows as is.
BOS_CHAT_TEMPLATE = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"


def char_tokenizer(chars: str = DEFAULT_CHARS, chat_template: str | None = None):  # type: ignore[no-untyped-def]
    """One token per character; ids 0-3 are pad, unk, bos, eos."""
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
    )
    if chat_template is not None:
        fast.chat_template = chat_template
    return fast


def tiny_llama(
    vocab_size: int,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    intermediate: int = 64,
    seed: int = 0,
    max_positions: int = 512,
):  # type: ignore[no-untyped-def]
    """A randomly initialised LlamaForCausalLM; deterministic for a given seed."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)
