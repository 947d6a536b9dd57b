"""Post-hoc calibration of the classification head, fitted on validation logits and stored in the model config.

A head trained for a few steps ranks rows well before its probabilities mean what they say: they can be too sharp
(a temperature fixes that) or shifted away from the base rate (that needs an intercept: Platt scaling). Both are one
affine map of the logits, `softmax(cls_logits * scale + bias)`, which `LlamaCLSGenConfig` stores as
`cls_logit_scale`/`cls_logit_bias` and `LlamaForCLSGen` applies wherever probabilities come out; `cls_logits` stay
raw. The method is chosen by cross-validated log-loss on the validation rows (so the extra parameters of Platt
scaling must earn their place), then refitted on all of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike
from sklearn.model_selection import StratifiedKFold


METHODS = ("none", "temperature", "platt")
# A weak pull towards the identity map keeps the fit finite on separable validation rows.
_L2 = 1e-3


@dataclass
class Calibration:
    """An affine map of the head's logits: `softmax(logits * scale + bias)`.

    Args:
        method: `"none"`, `"temperature"` (scale only) or `"platt"` (scale and one bias per class; for two classes
            this is Platt's sigmoid on the logit difference).
        scale: the logit multiplier, `1 / temperature`.
        bias: one value per class (`None`: no shift).
        cv_log_loss: the cross-validated log-loss of each method tried, on the validation rows.
    """

    method: str = "none"
    scale: float = 1.0
    bias: list[float] | None = None
    cv_log_loss: dict[str, float] | None = None

    @property
    def temperature(self) -> float:
        return 1.0 / self.scale

    def probabilities(self, logits: ArrayLike) -> np.ndarray:
        """Calibrated class probabilities `(n, num_labels)` of raw head logits."""
        return _probabilities(torch.as_tensor(np.asarray(logits), dtype=torch.float64), self.scale, self.bias).numpy()

    def uncalibrated(self, probabilities: ArrayLike) -> np.ndarray:
        """The raw head's probabilities behind calibrated ones (the map inverted; exact, as softmax ignores per-row
        shifts of the logits)."""
        logits = np.log(np.clip(np.asarray(probabilities, dtype=float), 1e-300, None))
        if self.bias is not None:
            logits = logits - np.asarray(self.bias)
        return torch.as_tensor(logits / self.scale).softmax(-1).numpy()

    def store(self, model) -> None:
        """Write the map into the config of `model` (a PEFT wrapper is unwrapped): it travels with `save_pretrained`."""
        config = (model.get_base_model() if hasattr(model, "get_base_model") else model).config
        config.cls_logit_scale = float(self.scale)
        config.cls_logit_bias = None if self.bias is None else [float(b) for b in self.bias]

    def to_dict(self) -> dict:
        return {**asdict(self), "temperature": self.temperature}


def fit_calibration(logits: ArrayLike, labels: ArrayLike, *, folds: int = 5, seed: int = 0) -> Calibration:
    """Choose and fit the calibration map of a head from its validation logits `(n, num_labels)` and gold labels.

    Each method of `METHODS` is scored by stratified `folds`-fold cross-validated log-loss; the best (ties go to the
    simpler method) is refitted on all rows. With fewer than two rows of some class in the validation set, there is
    nothing to cross-validate and the identity map is returned.
    """
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if logits.ndim != 2 or len(logits) != len(labels):
        raise ValueError(f"Calibration needs logits (n, num_labels) and n labels; got {tuple(logits.shape)} and {len(labels)}.")
    counts = np.bincount(labels.numpy(), minlength=logits.shape[1])
    folds = min(folds, int(counts.min()))
    if folds < 2:
        return Calibration()
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = {}
    for method in METHODS:
        losses = []
        for train, held_out in splitter.split(np.zeros(len(labels)), labels.numpy()):
            scale, bias = _fit(method, logits[train], labels[train])
            losses.append(_log_loss(logits[held_out], labels[held_out], scale, bias) * len(held_out))
        scores[method] = float(sum(losses) / len(labels))
    best = min(METHODS, key=lambda method: (round(scores[method], 6), METHODS.index(method)))
    scale, bias = _fit(best, logits, labels)
    return Calibration(best, scale, bias, scores)


def _fit(method: str, logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, list[float] | None]:
    if method == "none":
        return 1.0, None
    log_scale = torch.zeros((), dtype=torch.float64, requires_grad=True)
    free_bias = torch.zeros(logits.shape[1] - 1, dtype=torch.float64, requires_grad=method == "platt")
    parameters = [log_scale] + ([free_bias] if method == "platt" else [])
    optimizer = torch.optim.LBFGS(parameters, lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        bias = torch.cat([free_bias.new_zeros(1), free_bias])  # softmax ignores a shared shift: class 0 is fixed
        loss = torch.nn.functional.cross_entropy(logits * log_scale.exp() + bias, labels)
        loss = loss + _L2 * (log_scale**2 + (free_bias**2).sum())
        loss.backward()
        return loss

    optimizer.step(closure)
    bias = torch.cat([free_bias.new_zeros(1), free_bias]).detach()
    return float(log_scale.detach().exp()), (bias.tolist() if method == "platt" else None)


def _probabilities(logits: torch.Tensor, scale: float, bias: list[float] | None) -> torch.Tensor:
    shifted = logits * scale
    if bias is not None:
        shifted = shifted + torch.tensor(bias, dtype=logits.dtype)
    return shifted.softmax(-1)


def _log_loss(logits: torch.Tensor, labels: torch.Tensor, scale: float, bias: list[float] | None) -> float:
    probabilities = _probabilities(logits, scale, bias).clamp(min=1e-12)
    return float(-probabilities.log()[torch.arange(len(labels)), labels].mean())


__all__ = ["METHODS", "Calibration", "fit_calibration"]
