"""Shared fixtures: tiny random Llama configs for unit work, the embedded SmolLM2 for end-to-end checks."""

import copy

import pytest
import torch

from clsgen_hf import LlamaForCLSGen, load_model_and_tokenizer, load_tokenizer

from .toy import tiny_config


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


@pytest.fixture(scope="session")
def smollm2():
    """(model, tokenizer) of the embedded SmolLM2-135M-Instruct as `LlamaForCLSGen` (15-40 s to load on CPU)."""
    model, tokenizer = load_model_and_tokenizer()
    return model.eval(), tokenizer
