"""A learnable toy task for trainer tests: the label is decided by one keyword, and the explanation says so."""

import random

from datasets import Dataset
from peft import LoraConfig

from clsgen_hf import LlamaCLSGenConfig, LlamaForCLSGen


FILLER = "the patient trial dose outcome arm group week study result measure".split()
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def toy_row(rng: random.Random, label: int) -> dict:
    keyword = "improved" if label else "unchanged"
    text = " ".join(rng.choices(FILLER, k=8) + [keyword])
    return {
        "prompt": [
            {"role": "system", "content": "Classify."},
            {"role": "user", "content": f"{text}\nImproved?"},
        ],
        "completion": [{"role": "assistant", "content": f"It says {keyword}.\nAnswer: {'Yes' if label else 'No'}"}],
        "label": label,
    }


def toy_dataset(n: int, seed: int = 0) -> Dataset:
    rng = random.Random(seed)
    return Dataset.from_list([toy_row(rng, i % 2) for i in range(n)])


TINY = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
)


def tiny_config(vocab_size: int = 99, **overrides) -> LlamaCLSGenConfig:
    """A tiny random Llama CLSGen config (vocab 99 unless a real tokenizer's size is given)."""
    kwargs = dict(TINY, vocab_size=vocab_size, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    kwargs.update(overrides)
    return LlamaCLSGenConfig(**kwargs)


def tiny_model_for(tokenizer, seed: int = 0, **overrides) -> LlamaForCLSGen:
    """A tiny random CLSGen model speaking `tokenizer`'s vocabulary: real tokens, seconds to train."""
    import torch

    torch.manual_seed(seed)
    special = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                   eos_token_id=tokenizer.eos_token_id)
    return LlamaForCLSGen(tiny_config(len(tokenizer), **{**special, **overrides}))


def lora_config(r: int = 8) -> LoraConfig:
    return LoraConfig(r=r, lora_alpha=2 * r, target_modules=LORA_TARGETS, lora_dropout=0.0)
