"""Write a tiny random-weight Llama checkpoint that real vLLM (CPU build) can load and serve.

For tests and demos on machines without a GPU or a network: a byte-level BPE tokenizer
trained on a few sentences, a 2-layer Llama with head_dim 64 (vLLM's CPU attention kernel
rejects head_dim 16), random weights from a fixed seed, and a chat template. Needs
``transformers``, ``tokenizers`` and ``torch``, which ``gearshift[cpu]`` brings with vLLM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from scheduler.errors import ConfigError

CORPUS = (
    "Gearshift places model replicas across a mixed fleet of accelerators.",
    "Interactive requests ride the fastest cards; batch work soaks up the cheap ones.",
    "Every response says which accelerator served it, and what it cost.",
    "The quick brown fox jumps over the lazy dog, 0123456789 times.",
)

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@dataclass(frozen=True, slots=True)
class TinyModelShape:
    """Defaults: the smallest shape vLLM's CPU backend serves (head_dim = 256 / 4 = 64)."""

    hidden_size: int = 256
    intermediate_size: int = 512
    num_layers: int = 2
    num_attention_heads: int = 4
    num_kv_heads: int = 2
    max_position_embeddings: int = 32768
    vocab_size: int = 512
    seed: int = 0


def write_tiny_model(directory: Path, shape: TinyModelShape = TinyModelShape()) -> Path:
    """Write tokenizer, config and safetensors weights into ``directory``; returns it."""
    try:
        import torch
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
        from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    except ImportError as exc:
        raise ConfigError(
            f"writing a tiny model needs torch, tokenizers and transformers ({exc.name} is "
            "missing): install gearshift[cpu]"
        ) from None

    directory.mkdir(parents=True, exist_ok=True)
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=shape.vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(directory)

    torch.manual_seed(shape.seed)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_kv_heads,
        max_position_embeddings=shape.max_position_embeddings,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        dtype="bfloat16",
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.to(dtype=torch.bfloat16)  # type: ignore[arg-type,call-arg]  # transformers wraps it
    model.save_pretrained(directory, safe_serialization=True)
    (directory / "gearshift-tiny-model.json").write_text(
        json.dumps({"generator": "gearshift dev tiny-model", "seed": shape.seed}) + "\n"
    )
    return directory
