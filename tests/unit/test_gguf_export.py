"""The GGUF export of a student and the choice of serving runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from p2m.common.errors import InvalidInput
from p2m.common.student import StudentSpec
from p2m.llamacpp.gguf_export import Unsupported, _rope_rows, export_gguf, pre_tokenizer
from p2m.llamacpp.runtime import LLAMA_CPP, llama_cpp_unfit, resolve
from tests.tiny_models import QWEN2_SPLIT, build_tiny_decoder


def _bpe(pre: dict) -> dict:
    return {"model": {"type": "BPE"}, "pre_tokenizer": pre}


BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}


def test_the_pre_tokenizer_is_named_as_llama_cpp_knows_it() -> None:
    assert pre_tokenizer(_bpe(BYTE_LEVEL)) == "gpt-2"
    digits = {"type": "Digits", "individual_digits": True}
    sequence = {"type": "Sequence", "pretokenizers": [digits, BYTE_LEVEL]}
    assert pre_tokenizer(_bpe(sequence)) == "smollm"
    split = {"type": "Split", "pattern": {"Regex": QWEN2_SPLIT}, "behavior": "Isolated"}
    qwen = {"type": "Sequence", "pretokenizers": [split, {**BYTE_LEVEL, "use_regex": False}]}
    assert pre_tokenizer(_bpe(qwen)) == "qwen2"
    other = {"type": "Split", "pattern": {"Regex": r"\s+"}, "behavior": "Isolated"}
    with pytest.raises(Unsupported, match="pre-tokenizer"):
        pre_tokenizer(_bpe({"type": "Sequence", "pretokenizers": [other, BYTE_LEVEL]}))
    with pytest.raises(Unsupported, match="BPE"):
        pre_tokenizer({"model": {"type": "Unigram"}, "pre_tokenizer": BYTE_LEVEL})


def test_query_rows_move_from_rotated_halves_to_adjacent_pairs() -> None:
    # Two heads of 4 rows each: HF keeps a head's rotary pairs as (0, 2), (1, 3); ggml as
    # (0, 1), (2, 3).
    weight = np.arange(8, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    moved = _rope_rows(weight, heads=2)
    assert moved[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    assert moved.shape == weight.shape


@pytest.fixture(scope="module")
def tiny_llama_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_decoder(tmp_path_factory.mktemp("tiny") / "llama", model_type="llama")


def test_an_f32_export_holds_the_weights_tokenizer_and_shape(
    tiny_llama_folder: Path, tmp_path: Path
) -> None:
    import gguf
    from safetensors.numpy import load_file

    exported = export_gguf(tiny_llama_folder, tmp_path / "tiny.gguf", "f32")
    assert (exported.architecture, exported.precision) == ("llama", "f32")
    reader = gguf.GGUFReader(str(exported.path))
    fields = {name: field.contents() for name, field in reader.fields.items()}
    assert fields["general.architecture"] == "llama"
    assert fields["llama.block_count"] == 2
    assert (fields["llama.attention.head_count"], fields["llama.attention.head_count_kv"]) == (4, 2)
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    weights = load_file(tiny_llama_folder / "model.safetensors")
    vocab = weights["model.embed_tokens.weight"].shape[0]
    assert len(fields["tokenizer.ggml.tokens"]) == vocab
    assert fields["tokenizer.ggml.eos_token_id"] == fields["tokenizer.ggml.tokens"].index(
        "<|im_end|>"
    )
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == exported.tensors == len(weights)  # lm_head is not tied here
    embed = np.asarray(tensors["token_embd.weight"].data)
    assert np.array_equal(embed, weights["model.embed_tokens.weight"])
    query = np.asarray(tensors["blk.0.attn_q.weight"].data)
    hf_query = weights["model.layers.0.self_attn.q_proj.weight"]
    assert np.array_equal(query, _rope_rows(hf_query, 4)) and not np.array_equal(query, hf_query)
    value = np.asarray(tensors["blk.1.attn_v.weight"].data)
    assert np.array_equal(value, weights["model.layers.1.self_attn.v_proj.weight"])


def test_q8_0_quantises_matrices_and_keeps_vectors_f32(
    tiny_llama_folder: Path, tmp_path: Path
) -> None:
    import gguf

    full = export_gguf(tiny_llama_folder, tmp_path / "f32.gguf", "f32")
    small = export_gguf(tiny_llama_folder, tmp_path / "q8.gguf", "q8_0")
    assert small.size_bytes < 0.4 * full.size_bytes
    kinds = {t.name: t.tensor_type for t in gguf.GGUFReader(str(small.path)).tensors}
    assert kinds["blk.0.ffn_up.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert kinds["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
    assert not list(tmp_path.glob(".*.tmp"))  # written through a temporary file


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
def test_q4_0_and_q5_0_keep_the_output_layer_in_q8_0(
    model_type: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import gguf

    folder = build_tiny_decoder(tmp_path_factory.mktemp("tiny") / model_type, model_type=model_type)
    output = "output.weight" if model_type == "llama" else "token_embd.weight"  # qwen2 ties them
    kind = gguf.GGMLQuantizationType
    sizes = {}
    for precision, matrices in (("q8_0", kind.Q8_0), ("q5_0", kind.Q5_0), ("q4_0", kind.Q4_0)):
        exported = export_gguf(folder, folder.parent / f"{precision}.gguf", precision)
        reader = gguf.GGUFReader(str(exported.path))
        kinds = {t.name: t.tensor_type for t in reader.tensors}
        assert kinds["blk.0.ffn_up.weight"] == matrices
        assert kinds[output] == kind.Q8_0
        assert kinds["blk.1.attn_norm.weight"] == kind.F32
        sizes[precision] = exported.size_bytes
    assert sizes["q4_0"] < sizes["q5_0"] < sizes["q8_0"]


def test_an_unexportable_model_is_refused_with_the_reason(tmp_path: Path) -> None:
    folder = tmp_path / "t5"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "t5", "vocab_size": 10}')
    with pytest.raises(Unsupported, match="'t5'"):
        export_gguf(folder, tmp_path / "t5.gguf")
    assert not (tmp_path / "t5.gguf").exists()
    with pytest.raises(ValueError, match="precision"):
        export_gguf(folder, tmp_path / "t5.gguf", "int4")


def test_auto_takes_llama_cpp_where_it_can_and_says_why_not(
    tiny_llama_folder: Path, tmp_path: Path
) -> None:
    assert llama_cpp_unfit(tiny_llama_folder) is None
    chosen = resolve(tiny_llama_folder)
    assert (chosen.runtime, chosen.precision, chosen.reason) == (LLAMA_CPP, "q8_0", "")
    assert resolve(tiny_llama_folder, "auto", "f32").label == "llama.cpp f32"
    assert resolve(tiny_llama_folder, default_precision="q5_0").label == "llama.cpp q5_0"
    assert resolve(tiny_llama_folder, "llama.cpp", "bf16", default_precision="q5_0").label == (
        "llama.cpp bf16"  # one asked for wins over the default
    )
    assert resolve(tiny_llama_folder, "transformers").label == "transformers f32"
    gpu = resolve(tiny_llama_folder, transformers_because="a GPU")
    assert (gpu.label, gpu.reason) == ("transformers f32", "not llama.cpp: a GPU")

    seq2seq = tmp_path / "t5"
    seq2seq.mkdir()
    StudentSpec("encoder-decoder", "Answer.").save(seq2seq)
    chosen = resolve(seq2seq)  # an unset precision follows the runtime: f32 for transformers
    assert chosen.label == "transformers f32" and "encoder-decoder" in chosen.reason
    assert resolve(seq2seq, "auto", "f32").label == "transformers f32"
    cases = [
        (dict(runtime="llama.cpp"), "options.runtime", "encoder-decoder"),
        (dict(precision="q8_0"), "options.precision", "needs llama.cpp"),
        (dict(runtime="onnx"), "options.runtime", "must be one of"),
        (dict(precision="int4"), "options.precision", "must be one of"),
        (dict(runtime="transformers", precision="bf16"), "options.precision", "f32 only"),
    ]
    for kwargs, field, words in cases:
        with pytest.raises(InvalidInput) as caught:
            resolve(seq2seq, **kwargs)  # type: ignore[arg-type]
        assert (caught.value.field, words in caught.value.problem) == (field, True), kwargs
    with pytest.raises(InvalidInput) as caught:
        resolve(seq2seq, "llama.cpp", prefix="--")
    assert caught.value.field == "--runtime"


def test_threads_follow_the_cgroup_quota(tmp_path: Path) -> None:
    from p2m.common.procs import usable_cpus

    affinity = usable_cpus(tmp_path / "absent")
    assert affinity >= 1
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")  # a pod limited to 1.5 CPUs
    assert usable_cpus(quota) == min(affinity, 2)
    quota.write_text("max 100000\n")
    assert usable_cpus(quota) == affinity
    quota.write_text("garbage\n")
    assert usable_cpus(quota) == affinity
