"""The model catalog: dense decoder architectures, weight dtypes, and a Hugging Face config reader.

Architecture numbers are copied from each model's ``config.json`` on the Hugging Face Hub and the
parameter counts from the safetensors metadata of the same repositories (the project never reads
them at run time). ``architecture_from_hf_config`` recomputes the count from the shapes; a unit test
holds the two within 1 %.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Self

import pydantic
from pydantic import ConfigDict, Field

from nodes.accelerators import unknown_name_error
from scheduler.errors import ConfigError


class Dtype(enum.StrEnum):
    """How the weights are stored; names follow vLLM's ``--dtype`` / ``--quantization`` values."""

    BF16 = "bfloat16"
    FP16 = "float16"
    FP32 = "float32"
    FP8 = "fp8"
    INT8 = "int8"
    AWQ = "awq"
    GPTQ = "gptq"


# 4-bit AWQ/GPTQ: 0.5 byte of packed weight plus, per group of 128 weights, an fp16 scale and a
# 4-bit zero point (2.5 bytes / 128 = 0.0195 byte/param). Embeddings and lm_head stay in 16 bits
# in real checkpoints; we ignore that, so small-vocabulary-heavy models are slightly under-counted.
_GROUP_OVERHEAD = 2.5 / 128
_BYTES_PER_PARAM: Mapping[Dtype, float] = MappingProxyType(
    {
        Dtype.BF16: 2.0,
        Dtype.FP16: 2.0,
        Dtype.FP32: 4.0,
        Dtype.FP8: 1.0,
        Dtype.INT8: 1.0,
        Dtype.AWQ: 0.5 + _GROUP_OVERHEAD,
        Dtype.GPTQ: 0.5 + _GROUP_OVERHEAD,
    }
)


def bytes_per_param(dtype: Dtype) -> float:
    """Bytes one weight occupies in ``dtype``, group-scale overhead included for 4-bit formats."""
    return _BYTES_PER_PARAM[dtype]


class ModelArchitecture(pydantic.BaseModel):
    """The shapes of a dense decoder-only transformer (Llama, Mistral, Qwen2 families).

    Invariant: ``num_kv_heads`` divides ``num_attention_heads`` (grouped-query attention).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    num_parameters: int = Field(gt=0, description="Total weights, embeddings and lm_head included.")
    num_layers: int = Field(gt=0, le=1024, description="Decoder layers (num_hidden_layers).")
    hidden_size: int = Field(gt=0, description="Width of the residual stream.")
    intermediate_size: int = Field(gt=0, description="Width of the gated MLP's hidden layer.")
    num_attention_heads: int = Field(gt=0, description="Query heads per layer.")
    num_kv_heads: int = Field(gt=0, description="Key/value heads per layer (GQA groups).")
    head_dim: int = Field(gt=0, le=1024, description="Width of one attention head.")
    vocab_size: int = Field(gt=0, description="Tokenizer vocabulary (rows of the embedding).")
    max_position_embeddings: int = Field(gt=0, description="Longest context the model supports.")

    @pydantic.model_validator(mode="after")
    def _kv_heads_divide_heads(self) -> Self:
        if self.num_attention_heads % self.num_kv_heads:
            raise ValueError(
                f"num_kv_heads ({self.num_kv_heads}) must divide "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        return self

    def kv_bytes_per_token(self, kv_dtype_bytes: float = 2.0) -> float:
        """KV-cache bytes one token occupies: K and V, every layer, every KV head."""
        return 2.0 * self.num_layers * self.num_kv_heads * self.head_dim * kv_dtype_bytes


@dataclass(frozen=True, slots=True)
class CatalogModel:
    """A model Gearshift knows by name, with the dtype it is served in unless told otherwise."""

    name: str
    hf_id: str
    architecture: ModelArchitecture
    default_dtype: Dtype


def _model(
    name: str,
    hf_id: str,
    params: int,
    layers: int,
    hidden: int,
    inter: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    vocab: int,
    max_pos: int,
) -> CatalogModel:
    arch = ModelArchitecture(
        num_parameters=params,
        num_layers=layers,
        hidden_size=hidden,
        intermediate_size=inter,
        num_attention_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=vocab,
        max_position_embeddings=max_pos,
    )
    return CatalogModel(name=name, hf_id=hf_id, architecture=arch, default_dtype=Dtype.BF16)


# name, hf_id, params (safetensors total), layers, hidden, intermediate, heads, kv heads, head_dim,
# vocab, max positions. Llama-2 checkpoints ship fp16 weights but serve fine in bf16.
_CATALOG: tuple[CatalogModel, ...] = (
    _model(
        "llama-2-7b",
        "meta-llama/Llama-2-7b-chat-hf",
        6_738_415_616,
        32,
        4096,
        11008,
        32,
        32,
        128,
        32000,
        4096,
    ),
    _model(
        "llama-2-13b",
        "meta-llama/Llama-2-13b-chat-hf",
        13_015_864_320,
        40,
        5120,
        13824,
        40,
        40,
        128,
        32000,
        4096,
    ),
    _model(
        "llama-2-70b",
        "meta-llama/Llama-2-70b-chat-hf",
        68_976_648_192,
        80,
        8192,
        28672,
        64,
        8,
        128,
        32000,
        4096,
    ),
    _model(
        "llama-3.1-8b",
        "meta-llama/Llama-3.1-8B-Instruct",
        8_030_261_248,
        32,
        4096,
        14336,
        32,
        8,
        128,
        128256,
        131072,
    ),
    _model(
        "llama-3.1-70b",
        "meta-llama/Llama-3.1-70B-Instruct",
        70_553_706_496,
        80,
        8192,
        28672,
        64,
        8,
        128,
        128256,
        131072,
    ),
    _model(
        "llama-3.2-1b",
        "meta-llama/Llama-3.2-1B-Instruct",
        1_235_814_400,
        16,
        2048,
        8192,
        32,
        8,
        64,
        128256,
        131072,
    ),
    _model(
        "llama-3.2-3b",
        "meta-llama/Llama-3.2-3B-Instruct",
        3_212_749_824,
        28,
        3072,
        8192,
        24,
        8,
        128,
        128256,
        131072,
    ),
    _model(
        "qwen2.5-0.5b",
        "Qwen/Qwen2.5-0.5B-Instruct",
        494_032_768,
        24,
        896,
        4864,
        14,
        2,
        64,
        151936,
        32768,
    ),
    _model(
        "qwen2.5-1.5b",
        "Qwen/Qwen2.5-1.5B-Instruct",
        1_543_714_304,
        28,
        1536,
        8960,
        12,
        2,
        128,
        151936,
        32768,
    ),
    _model(
        "qwen2.5-7b",
        "Qwen/Qwen2.5-7B-Instruct",
        7_615_616_512,
        28,
        3584,
        18944,
        28,
        4,
        128,
        152064,
        32768,
    ),
    _model(
        "qwen2.5-72b",
        "Qwen/Qwen2.5-72B-Instruct",
        72_706_203_648,
        80,
        8192,
        29568,
        64,
        8,
        128,
        152064,
        32768,
    ),
    _model(
        "mistral-7b",
        "mistralai/Mistral-7B-Instruct-v0.3",
        7_248_023_552,
        32,
        4096,
        14336,
        32,
        8,
        128,
        32768,
        32768,
    ),
)

MODELS: Mapping[str, CatalogModel] = MappingProxyType({m.name: m for m in _CATALOG})
_BY_LOWER: Mapping[str, str] = MappingProxyType(
    {key.lower(): m.name for m in _CATALOG for key in (m.name, m.hf_id)}
)


def catalog_model(name: str) -> CatalogModel:
    """The catalog model called ``name`` (or whose Hugging Face id is ``name``), ignoring case.

    Raises CatalogError, listing close matches and the valid names, for an unknown name.
    """
    canonical = _BY_LOWER.get(name.strip().lower())
    if canonical is None:
        raise unknown_name_error("model", name, MODELS)
    return MODELS[canonical]


# Model types whose q/k/v projections carry a bias even though config.json does not say so.
_QKV_BIAS_BY_DEFAULT = frozenset({"qwen2"})
# Config keys that mark a mixture-of-experts model, whose active and total weights differ.
_MOE_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")


def architecture_from_hf_config(path: str | Path) -> ModelArchitecture:
    """Read a Hugging Face ``config.json`` (the file, or a directory holding it) of a dense decoder.

    Handles Llama, Mistral and Qwen2 keys: ``num_key_value_heads`` defaults to the head count,
    ``head_dim`` to hidden / heads. ``num_parameters`` is computed from the shapes (see
    ``count_parameters``). Raises ConfigError when the file is unreadable, not JSON, lacks a key,
    describes a mixture-of-experts model, or has inconsistent shapes.
    """
    file = Path(path)
    if file.is_dir():
        file = file / "config.json"
    try:
        raw: Any = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read a Hugging Face config from {file}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: expected a JSON object")
    try:
        return _architecture(raw)
    except KeyError as exc:
        raise ConfigError(f"{file}: missing key {exc.args[0]!r}") from exc
    except (TypeError, ValueError) as exc:  # pydantic.ValidationError is a ValueError
        message = f"{file}: not a dense decoder config Gearshift understands: {exc}"
        raise ConfigError(message) from exc


def _architecture(config: Mapping[str, Any]) -> ModelArchitecture:
    moe = [key for key in _MOE_KEYS if config.get(key)]
    if moe:
        raise ValueError(f"mixture-of-experts models are not supported (has {moe[0]})")
    heads = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    shapes = {
        "num_layers": int(config["num_hidden_layers"]),
        "hidden_size": hidden,
        "intermediate_size": int(config["intermediate_size"]),
        "num_attention_heads": heads,
        "num_kv_heads": kv_heads,
        "head_dim": head_dim,
        "vocab_size": int(config["vocab_size"]),
        "max_position_embeddings": int(config["max_position_embeddings"]),
    }
    qkv_bias = bool(config.get("attention_bias", config.get("model_type") in _QKV_BIAS_BY_DEFAULT))
    tied = bool(config.get("tie_word_embeddings", False))
    params = count_parameters(**shapes, qkv_bias=qkv_bias, tie_word_embeddings=tied)
    return ModelArchitecture(num_parameters=params, **shapes)


def count_parameters(
    *,
    num_layers: int,
    hidden_size: int,
    intermediate_size: int,
    num_attention_heads: int,
    num_kv_heads: int,
    head_dim: int,
    vocab_size: int,
    max_position_embeddings: int = 0,
    qkv_bias: bool = False,
    tie_word_embeddings: bool = False,
) -> int:
    """Weights of a Llama-style decoder, from its shapes.

    Embedding (vocab x hidden); per layer q/o (hidden x heads*head_dim each), k/v
    (hidden x kv_heads*head_dim each), optional q/k/v biases, a gated MLP (3 x hidden x
    intermediate) and two RMSNorm weights; a final norm; lm_head unless tied to the embedding.
    Rotary embeddings have no weights, so ``max_position_embeddings`` does not count.
    """
    q_width = num_attention_heads * head_dim
    kv_width = num_kv_heads * head_dim
    attention = 2 * hidden_size * q_width + 2 * hidden_size * kv_width
    if qkv_bias:
        attention += q_width + 2 * kv_width
    layer = attention + 3 * hidden_size * intermediate_size + 2 * hidden_size
    embedding = vocab_size * hidden_size
    lm_head = 0 if tie_word_embeddings else embedding
    return embedding + num_layers * layer + hidden_size + lm_head
