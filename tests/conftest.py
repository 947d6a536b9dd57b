"""Shared fixtures: tiny random Llama configs for unit work, the embedded SmolLM2 for end-to-end checks."""

import copy

import pytest
import torch

from clsgen_hf import LlamaCLSGenConfig, LlamaForCLSGen, load_model_and_tokenizer, load_tokenizer


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


@pytest.fixture
def tiny_model() -> LlamaForCLSGen:
    torch.manual_seed(0)
    return LlamaForCLSGen(tiny_config()).eval()


@pytest.fixture(scope="session")
def _smollm2_tokenizer():
    return load_tokenizer()


@pytest.fixture
def smollm2_tokenizer(_smollm2_tokenizer):
    """The embedded model's real tokenizer (loaded once per session; each test gets its own copy)."""
    return copy.deepcopy(_smollm2_tokenizer)


@pytest.fixture
def tiny_model_for_smollm2(_smollm2_tokenizer) -> LlamaForCLSGen:
    """A tiny random CLSGen model speaking the SmolLM2 tokenizer's vocabulary: real tokens, seconds to train."""
    torch.manual_seed(0)
    tok = _smollm2_tokenizer
    config = tiny_config(
        vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id
    )
    return LlamaForCLSGen(config)


@pytest.fixture(scope="session")
def smollm2():
    """(model, tokenizer) of the embedded SmolLM2-135M-Instruct as `LlamaForCLSGen` (15-40 s to load on CPU)."""
    model, tokenizer = load_model_and_tokenizer()
    return model.eval(), tokenizer
