"""Tiny randomly initialised models, for testing the encoder-decoder path offline.

No pretrained T5 weights can be had without the hub; a tiny T5 with a borrowed tokenizer
exercises the same code (``AutoModelForSeq2SeqLM``, labels, generation) in seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from p2m.common.student import ensure_pad_token


def build_tiny_t5(tokenizer_source: Path, out: Path, *, seed: int = 0) -> Path:
    """Save a 2-layer, 64-wide T5 with ``tokenizer_source``'s tokenizer in ``out``; return it."""
    import torch
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    ensure_pad_token(tokenizer)
    config = T5Config(  # type: ignore[call-arg]
        vocab_size=len(tokenizer),
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def tiny_llama(*, seed: int = 0) -> Any:
    """A 2-layer, 32-wide Llama (a decoder-only model) over a 64-token vocabulary, in memory."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
    )
    return LlamaForCausalLM(config)
