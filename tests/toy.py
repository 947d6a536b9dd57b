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


def tiny_model_for(tokenizer, seed: int = 0, **overrides) -> LlamaForCLSGen:
    import torch

    torch.manual_seed(seed)
    config = LlamaCLSGenConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **overrides,
    )
    return LlamaForCLSGen(config)


def lora_config(r: int = 8) -> LoraConfig:
    return LoraConfig(r=r, lora_alpha=2 * r, target_modules=LORA_TARGETS, lora_dropout=0.0)
