"""The model catalog and the Hugging Face config reader, checked against published counts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pydantic
import pytest

from nodes.models import (
    MODELS,
    Dtype,
    ModelArchitecture,
    architecture_from_hf_config,
    bytes_per_param,
    catalog_model,
)
from scheduler.errors import CatalogError, ConfigError

REQUIRED = (
    "llama-2-7b", "llama-2-13b", "llama-2-70b", "llama-3.1-8b", "llama-3.1-70b", "llama-3.2-1b",
    "llama-3.2-3b", "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-7b", "qwen2.5-72b", "mistral-7b",
)


def _llama(layers: int, hidden: int, inter: int, heads: int, kv: int, vocab: int, max_pos: int,
           **extra: Any) -> dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": layers,
        "hidden_size": hidden, "intermediate_size": inter, "num_attention_heads": heads,
        "num_key_value_heads": kv, "vocab_size": vocab, "max_position_embeddings": max_pos,
        "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "torch_dtype": "bfloat16", **extra,
    }


def _qwen2(layers: int, hidden: int, inter: int, heads: int, kv: int, vocab: int,
           tied: bool) -> dict[str, Any]:
    # Qwen2 configs carry no attention_bias key; the q/k/v projections have biases regardless.
    return {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "num_hidden_layers": layers,
        "hidden_size": hidden, "intermediate_size": inter, "num_attention_heads": heads,
        "num_key_value_heads": kv, "vocab_size": vocab, "max_position_embeddings": 32768,
        "tie_word_embeddings": tied, "torch_dtype": "bfloat16", "sliding_window": 131072,
    }


# Abridged config.json of each catalog model's Hugging Face repository.
HF_CONFIGS: dict[str, dict[str, Any]] = {
    # Llama-2 configs predate num_key_value_heads for the MHA sizes.
    "llama-2-7b": {
        k: v for k, v in _llama(32, 4096, 11008, 32, 32, 32000, 4096).items()
        if k != "num_key_value_heads"
    },
    "llama-2-13b": _llama(40, 5120, 13824, 40, 40, 32000, 4096),
    "llama-2-70b": _llama(80, 8192, 28672, 64, 8, 32000, 4096),
    "llama-3.1-8b": _llama(32, 4096, 14336, 32, 8, 128256, 131072, attention_bias=False),
    "llama-3.1-70b": _llama(80, 8192, 28672, 64, 8, 128256, 131072, attention_bias=False),
    "llama-3.2-1b": _llama(16, 2048, 8192, 32, 8, 128256, 131072, head_dim=64,
                           tie_word_embeddings=True),
    "llama-3.2-3b": _llama(28, 3072, 8192, 24, 8, 128256, 131072, head_dim=128,
                           tie_word_embeddings=True),
    "qwen2.5-0.5b": _qwen2(24, 896, 4864, 14, 2, 151936, tied=True),
    "qwen2.5-1.5b": _qwen2(28, 1536, 8960, 12, 2, 151936, tied=True),
    "qwen2.5-7b": _qwen2(28, 3584, 18944, 28, 4, 152064, tied=False),
    "qwen2.5-72b": _qwen2(80, 8192, 29568, 64, 8, 152064, tied=False),
    "mistral-7b": {
        **_llama(32, 4096, 14336, 32, 8, 32768, 32768), "model_type": "mistral",
        "architectures": ["MistralForCausalLM"], "head_dim": None, "sliding_window": None,
    },
}

# Parameter counts as the model cards publish them.
PUBLISHED_PARAMS = {
    "llama-3.1-8b": 8.03e9,
    "llama-3.1-70b": 70.6e9,
    "qwen2.5-0.5b": 0.494e9,
    "qwen2.5-7b": 7.62e9,
    "qwen2.5-72b": 72.7e9,
    "llama-2-7b": 6.74e9,
    "mistral-7b": 7.25e9,
}


def _write(directory: Path, config: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return directory


def test_every_catalog_model_has_a_config_here() -> None:
    assert set(HF_CONFIGS) == set(MODELS) >= set(REQUIRED)


@pytest.mark.parametrize("name", sorted(HF_CONFIGS))
def test_reader_matches_catalog(name: str, tmp_path: Path) -> None:
    parsed = architecture_from_hf_config(_write(tmp_path / name, HF_CONFIGS[name]))
    catalog = MODELS[name].architecture
    assert parsed.num_parameters == pytest.approx(catalog.num_parameters, rel=0.01)
    assert parsed.model_dump(exclude={"num_parameters"}) == catalog.model_dump(
        exclude={"num_parameters"}
    )


@pytest.mark.parametrize(("name", "published"), sorted(PUBLISHED_PARAMS.items()))
def test_parameter_counts_match_published(name: str, published: float, tmp_path: Path) -> None:
    parsed = architecture_from_hf_config(_write(tmp_path, HF_CONFIGS[name]))
    assert parsed.num_parameters == pytest.approx(published, rel=0.02)
    assert MODELS[name].architecture.num_parameters == pytest.approx(published, rel=0.02)


def test_llama_3_1_8b_figures() -> None:
    arch = catalog_model("llama-3.1-8b").architecture
    assert arch.model_dump() == {
        "num_parameters": 8_030_261_248, "num_layers": 32, "hidden_size": 4096,
        "intermediate_size": 14336, "num_attention_heads": 32, "num_kv_heads": 8,
        "head_dim": 128, "vocab_size": 128256, "max_position_embeddings": 131072,
    }
    assert arch.num_parameters * bytes_per_param(Dtype.BF16) / 1e9 == pytest.approx(16.06, abs=0.01)


@pytest.mark.parametrize(
    ("name", "kib"),
    [("llama-3.1-8b", 128), ("llama-3.1-70b", 320), ("llama-2-7b", 512), ("llama-2-13b", 800)],
)
def test_kv_bytes_per_token(name: str, kib: int) -> None:
    assert MODELS[name].architecture.kv_bytes_per_token() == kib * 1024
    assert MODELS[name].architecture.kv_bytes_per_token(1.0) == kib * 512


@pytest.mark.parametrize(
    "query", ["llama-3.1-8b", "LLaMA-3.1-8B", "meta-llama/Llama-3.1-8B-Instruct"]
)
def test_catalog_lookup_by_name_or_hf_id(query: str) -> None:
    assert catalog_model(query).name == "llama-3.1-8b"


def test_unknown_model_suggests_close_matches() -> None:
    with pytest.raises(CatalogError, match="llama-3.1-8b") as caught:
        catalog_model("llama-3-8b")
    assert "Valid names:" in str(caught.value) and "qwen2.5-72b" in str(caught.value)


def test_tiny_llama_config(tmp_path: Path) -> None:
    config = _llama(2, 256, 688, 4, 2, 1000, 2048)
    arch = architecture_from_hf_config(_write(tmp_path, config) / "config.json")
    assert (arch.num_layers, arch.hidden_size, arch.intermediate_size) == (2, 256, 688)
    assert (arch.num_attention_heads, arch.num_kv_heads, arch.head_dim) == (4, 2, 64)
    assert (arch.vocab_size, arch.max_position_embeddings) == (1000, 2048)
    per_layer = 2 * 256 * 256 + 2 * 256 * 128 + 3 * 256 * 688 + 2 * 256
    assert arch.num_parameters == 2 * 1000 * 256 + 2 * per_layer + 256
    assert arch.kv_bytes_per_token() == 2 * 2 * 2 * 64 * 2


def test_missing_kv_heads_and_head_dim_default(tmp_path: Path) -> None:
    config = _llama(2, 256, 688, 4, 2, 1000, 2048)
    del config["num_key_value_heads"]
    arch = architecture_from_hf_config(_write(tmp_path, config))
    assert (arch.num_kv_heads, arch.head_dim) == (4, 64)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "cannot read"),
        ("{not json", "cannot read"),
        ("[1, 2]", "JSON object"),
        (json.dumps({"hidden_size": 64}), "missing key"),
        (json.dumps(_llama(2, 256, 688, 4, 3, 1000, 2048)), "must divide"),
        (json.dumps(_llama(2, 256, 688, 4, 2, 1000, 2048, num_local_experts=8)), "mixture"),
        (json.dumps(_llama(2, 256, 688, 4, 2, 0, 2048)), "vocab_size"),
    ],
)
def test_bad_configs_raise_config_error(content: str | None, match: str, tmp_path: Path) -> None:
    if content is not None:
        (tmp_path / "config.json").write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=match):
        architecture_from_hf_config(tmp_path)


def test_architecture_forbids_unknown_keys_and_documents_every_field() -> None:
    fields = MODELS["llama-2-7b"].architecture.model_dump()
    with pytest.raises(pydantic.ValidationError):
        ModelArchitecture(**fields, rope_theta=1e4)  # type: ignore[call-arg]
    assert all(f.description for f in ModelArchitecture.model_fields.values())


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [(Dtype.BF16, 2.0), (Dtype.FP16, 2.0), (Dtype.FP32, 4.0), (Dtype.FP8, 1.0), (Dtype.INT8, 1.0)],
)
def test_bytes_per_param(dtype: Dtype, expected: float) -> None:
    assert bytes_per_param(dtype) == expected


@pytest.mark.parametrize("dtype", [Dtype.AWQ, Dtype.GPTQ])
def test_four_bit_formats_include_group_scales(dtype: Dtype) -> None:
    assert 0.5 < bytes_per_param(dtype) < 0.55
