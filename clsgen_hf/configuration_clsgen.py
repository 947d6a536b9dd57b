"""Configuration of `LlamaForCLSGen`. Copied next to saved models (`trust_remote_code=True`): it imports only public
names of transformers and huggingface_hub."""

from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import LlamaConfig


MODELING_VERSION = "0.2.0"
"""Version of this file and `modeling_clsgen.py`, written into every saved config as `clsgen_modeling_version`, so
that a folder's consumer can tell which code wrote it (`clsgen-hf refresh-code` updates old folders)."""


@strict
class LlamaCLSGenConfig(LlamaConfig):
    r"""
    Configuration of a [`LlamaForCLSGen`]: every [`LlamaConfig`] field, plus the classification head.

    Args:
        num_labels (`int`, *optional*, defaults to 2):
            Number of classes of the `score` head (any N >= 2). Set through `id2label`/`label2id` or `num_labels`.
        cls_dropout (`float`, *optional*, defaults to 0.0):
            Dropout on the pooled hidden state before the `score` head (training only).
        cls_threshold (`float`, *optional*, defaults to 0.5):
            Decision threshold on the positive-class probability in the binary case (tuned on validation data).
        cls_logit_scale (`float`, *optional*, defaults to 1.0):
            Calibration of the head: its probabilities are `softmax(cls_logits * cls_logit_scale + cls_logit_bias)`.
            A temperature `T` is `cls_logit_scale = 1 / T`; Platt scaling adds the bias (see `clsgen_hf.calibration`).
        cls_logit_bias (`list[float]`, *optional*):
            One value per class added to the scaled logits (`None`: no shift).

    ```python
    >>> from clsgen_hf import LlamaCLSGenConfig, LlamaForCLSGen
    >>> config = LlamaCLSGenConfig(vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    ...                            num_attention_heads=4, id2label={0: "negative", 1: "positive"})
    >>> model = LlamaForCLSGen(config)
    >>> model.score.out_features
    2
    ```"""

    model_type = "llama_clsgen"
    # Where a saved folder's copies of these files are found, so that `trust_remote_code=True` loads it.
    default_auto_map = {
        "AutoConfig": "configuration_clsgen.LlamaCLSGenConfig",
        "AutoModel": "modeling_clsgen.LlamaForCLSGen",
        "AutoModelForCausalLM": "modeling_clsgen.LlamaForCLSGen",
    }

    cls_dropout: float = 0.0
    cls_threshold: float = 0.5
    cls_logit_scale: float = 1.0
    cls_logit_bias: list[float] | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.auto_map = {**self.default_auto_map, **(getattr(self, "auto_map", None) or {})}

    def validate_architecture(self):
        """Part of `@strict`-powered validation: the Llama checks, plus a usable classification head."""
        super().validate_architecture()
        if self.num_labels is None or self.num_labels < 2:
            raise ValueError(f"`num_labels` must be at least 2 for the classification head, got {self.num_labels}.")
        for name in ("cls_dropout", "cls_threshold"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"`{name}` must lie in [0, 1], got {getattr(self, name)}.")
        if not self.cls_logit_scale > 0:
            raise ValueError(f"`cls_logit_scale` must be > 0, got {self.cls_logit_scale}.")
        if self.cls_logit_bias is not None and len(self.cls_logit_bias) != self.num_labels:
            raise ValueError(
                f"`cls_logit_bias` needs one value per label ({self.num_labels}), got {len(self.cls_logit_bias)}."
            )

    def to_dict(self) -> dict[str, Any]:
        """The config as saved, stamped with the version of the modeling code that writes it."""
        return {**super().to_dict(), "clsgen_modeling_version": MODELING_VERSION}

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        """Accept plain Llama checkpoints (they become CLSGen ones) and refuse every other architecture."""
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        model_type = config_dict.get("model_type")
        if model_type == LlamaConfig.model_type:
            config_dict["model_type"] = cls.model_type
        elif model_type != cls.model_type:
            raise ValueError(
                f"{pretrained_model_name_or_path!r} is a `{model_type}` checkpoint, but CLSGen models are built on "
                f"the Llama architecture (model_type `llama` or `{cls.model_type}`). Choose a Llama-architecture "
                "causal LM (e.g. SmolLM2, Llama 3, TinyLlama)."
            )
        return config_dict, kwargs


__all__ = ["MODELING_VERSION", "LlamaCLSGenConfig"]
