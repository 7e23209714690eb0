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


def tiny_t5(*, seed: int = 0) -> Any:
    """A 1-layer, 16-wide T5 (an encoder-decoder model) over a 64-token vocabulary, in memory."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    config = T5Config(  # type: ignore[call-arg]
        vocab_size=64,
        d_model=16,
        d_ff=32,
        d_kv=4,
        num_layers=1,
        num_heads=2,
        decoder_start_token_id=0,
        dropout_rate=0.0,
        pad_token_id=0,
    )
    return T5ForConditionalGeneration(config)


QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_CORPUS = [
    "The cat sat on the mat. The dog ate 12 bones in 2024.",
    "Classify the sentiment: I loved it! Terrible service, never again.",
    "What is the capital of France? Paris is the capital of France.",
    "def add(a, b):\n    return a + b\n",
]


def build_tiny_decoder(out: Path, *, model_type: str = "llama", seed: int = 0) -> Path:
    """Save a 2-layer decoder-only student (``llama`` or ``qwen2``) in ``out``; return it.

    Its byte-level BPE tokenizer is trained here on a few sentences (a Qwen2-style split for
    ``qwen2``, GPT-2's for ``llama``); the weights are random but spread wide (init 0.2), so
    greedy decoding has no near-ties for two runtimes to break differently.
    """
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    from p2m.common.student import StudentSpec

    tokenizer = Tokenizer(models.BPE())
    if model_type == "qwen2":
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(_CORPUS, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token="<|im_end|>", unk_token="<|endoftext|>"
    )
    fast.pad_token = fast.eos_token
    size = dict(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.2,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    if model_type == "qwen2":
        model: Any = Qwen2ForCausalLM(Qwen2Config(**size, tie_word_embeddings=True))
    else:
        model = LlamaForCausalLM(LlamaConfig(**size, tie_word_embeddings=False))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    fast.save_pretrained(out)
    StudentSpec("decoder-only", "Answer.", max_output_tokens=12, base_model="tiny").save(out)
    return out
