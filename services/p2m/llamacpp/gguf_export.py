"""Write a trained decoder-only student (Llama or Qwen2 layout) as a GGUF file for llama.cpp.

The weights come from the folder's safetensors; the tokenizer's vocabulary, merges and special
tokens from its ``tokenizer.json``; the architecture's numbers from ``config.json``. Precisions:
``f32`` (the same numbers as the folder), ``f16``, ``bf16``, ``q8_0``, ``q5_0`` and ``q4_0``
(matrices only; norms and biases stay f32; in ``q5_0`` and ``q4_0`` the output layer, or the
token embeddings it is tied to, stays ``q8_0``, as llama.cpp's own quantizer keeps it finer).
Llama's query and key rows are reordered the way llama.cpp's rotary embedding expects them (HF
rotates halves, ggml adjacent pairs).

A student of another kind (an encoder-decoder, a tokenizer that is not byte-level BPE) raises
``Unsupported`` naming why, so the caller can serve it with transformers instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from p2m.common.settings import SERVING_PRECISIONS

if TYPE_CHECKING:
    import numpy as np

PRECISIONS = SERVING_PRECISIONS
COARSE = ("q5_0", "q4_0")  # their output layer stays q8_0
# HF model_type -> (GGUF architecture, whether query/key rows are reordered for ggml's rope).
ARCHITECTURES = {"llama": ("llama", True), "qwen2": ("qwen2", False)}
# The byte-level pre-tokenizers llama.cpp knows, told apart by the regex they split with.
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


class Unsupported(Exception):
    """The folder holds a model this exporter cannot write; the message says why."""


@dataclass(frozen=True)
class GgufExport:
    """What was written.

    Attributes:
        path: The GGUF file.
        architecture: GGUF architecture ("llama", "qwen2").
        precision: One of ``PRECISIONS``.
        tensors: Tensors written.
        size_bytes: Size of the file.
    """

    path: Path
    architecture: str
    precision: str
    tensors: int
    size_bytes: int


def export_gguf(folder: Path, target: Path, precision: str = "f32") -> GgufExport:
    """Write the student in ``folder`` to ``target`` (atomically: a temp file, then a rename).

    Raises:
        ValueError: ``precision`` is not one of ``PRECISIONS``.
        Unsupported: The model or its tokenizer has a layout this exporter does not write.
    """
    import gguf

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    config = _read_json(folder / "config.json")
    model_type = str(config.get("model_type", ""))
    if model_type not in ARCHITECTURES:
        raise Unsupported(
            f"llama.cpp export supports {sorted(ARCHITECTURES)} models, not {model_type!r}"
        )
    arch, permute = ARCHITECTURES[model_type]
    tokenizer = _read_json(folder / "tokenizer.json")
    temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    writer = gguf.GGUFWriter(temp, arch)
    try:
        _write_architecture(writer, config, precision)
        _write_tokenizer(writer, folder, tokenizer, int(config["vocab_size"]))
        count = 0
        for name, data, qtype in _tensors(folder, config, arch, permute, precision):
            writer.add_tensor(name, data, raw_dtype=qtype)
            count += 1
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(temp, target)
    except BaseException:
        writer.close()
        temp.unlink(missing_ok=True)
        raise
    return GgufExport(target, arch, precision, count, target.stat().st_size)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise Unsupported(f"cannot read {path.name}: {exc}") from exc
    if not isinstance(data, dict):
        raise Unsupported(f"{path.name} is not a JSON object")
    return data


def _file_type(precision: str) -> int:
    import gguf

    return {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "bf16": gguf.LlamaFileType.MOSTLY_BF16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
        "q5_0": gguf.LlamaFileType.MOSTLY_Q5_0,
        "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
    }[precision]


def _write_architecture(writer: Any, config: dict[str, Any], precision: str) -> None:
    heads = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    rope = config.get("rope_parameters") or {}
    theta = rope.get("rope_theta", config.get("rope_theta", 10_000.0))
    if rope.get("rope_type", "default") != "default" or config.get("rope_scaling"):
        raise Unsupported("llama.cpp export supports only unscaled rotary embeddings")
    writer.add_name(str(config.get("_name_or_path") or "p2m student"))
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_context_length(int(config.get("max_position_embeddings", 2048)))
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(config.get("num_key_value_heads", heads)))
    writer.add_rope_freq_base(float(theta))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    writer.add_rope_dimension_count(int(config.get("head_dim") or hidden // heads))
    writer.add_vocab_size(int(config["vocab_size"]))
    writer.add_file_type(_file_type(precision))


def pre_tokenizer(tokenizer: dict[str, Any]) -> str:
    """llama.cpp's name for the tokenizer's pre-tokenizer (how text is split before BPE).

    Raises:
        Unsupported: Not a byte-level BPE tokenizer, or a pre-tokenizer llama.cpp does not know.
    """
    kind = (tokenizer.get("model") or {}).get("type")
    if kind != "BPE":
        raise Unsupported(f"llama.cpp export supports BPE tokenizers, not {kind!r}")
    pre = tokenizer.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and steps[0].get("pattern", {}).get("Regex") == (
        _QWEN2_SPLIT
    ):
        return "qwen2"
    raise Unsupported(f"llama.cpp export does not know the pre-tokenizer {kinds}")


def _write_tokenizer(writer: Any, folder: Path, tokenizer: dict[str, Any], vocab_size: int) -> None:
    import gguf

    pre = pre_tokenizer(tokenizer)
    model = tokenizer["model"]
    vocab: dict[str, int] = dict(model["vocab"])
    added = {token["id"]: token for token in tokenizer.get("added_tokens", [])}
    for token_id, token in added.items():
        vocab[token["content"]] = token_id
    by_id = {token_id: text for text, token_id in vocab.items()}
    if max(by_id) >= vocab_size:
        raise Unsupported(f"the tokenizer has ids beyond the model's {vocab_size} embeddings")
    tokens, types = [], []
    for token_id in range(vocab_size):
        if token_id not in by_id:
            tokens.append(f"[PAD{token_id}]")
            types.append(gguf.TokenType.UNUSED)
        elif token_id in added:
            tokens.append(by_id[token_id])
            special = added[token_id].get("special", False)
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[token_id])
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    special = gguf.SpecialVocab(folder, load_merges=False)
    special.add_to_gguf(writer, quiet=True)


def _tensors(
    folder: Path, config: dict[str, Any], arch: str, permute: bool, precision: str
) -> Iterator[tuple[str, np.ndarray, Any]]:
    """(GGUF name, data, ggml type) for every weight of the folder, in file order."""
    import gguf
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise Unsupported(f"{folder} has no safetensors weights")
    names = gguf.get_tensor_name_map(
        gguf.MODEL_ARCH[arch.upper()], int(config["num_hidden_layers"])
    )
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads", heads))
    tied = bool(config.get("tie_word_embeddings", False))
    output = "token_embd.weight" if tied else "output.weight"
    for file in files:
        with safe_open(file, framework="pt") as weights:
            for hf_name in weights.keys():  # noqa: SIM118 (safe_open is not a mapping)
                if tied and hf_name == "lm_head.weight":
                    continue  # llama.cpp reuses the token embeddings
                name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
                if name is None:
                    raise Unsupported(f"no GGUF name for the weight {hf_name}")
                data = weights.get_tensor(hf_name).float().numpy()
                if permute and hf_name.endswith("q_proj.weight"):
                    data = _rope_rows(data, heads)
                elif permute and hf_name.endswith("k_proj.weight"):
                    data = _rope_rows(data, kv_heads)
                finer = precision in COARSE and name == output
                yield name, *_encode(data, "q8_0" if finer else precision)


def _rope_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Reorder each head's rows from HF's rotate-halves layout to ggml's adjacent pairs."""
    rows = weight.shape[0]
    return (
        weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _encode(data: np.ndarray, precision: str) -> tuple[np.ndarray, Any]:
    """The tensor in ``precision`` (vectors stay f32) and its ggml type."""
    import gguf
    import numpy as np

    kind = gguf.GGMLQuantizationType
    if data.ndim < 2 or precision == "f32":
        return data.astype(np.float32), kind.F32
    if precision == "f16":
        return data.astype(np.float16), kind.F16
    qtype = kind[precision.upper()]
    if qtype != kind.BF16 and data.shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]:
        return data.astype(np.float16), kind.F16  # rows that do not split into blocks
    return gguf.quants.quantize(data, qtype), qtype
