"""Post-hoc calibration of the classification head: one affine map of its logits, `softmax(logits * scale + bias)`,
fitted on validation rows and stored in the config (`cls_logit_scale`, `cls_logit_bias`). Temperature scaling fixes
a head that is too sharp, Platt scaling one shifted from the base rate; cross-validated log-loss picks the method.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from numpy.typing import ArrayLike
from scipy.special import softmax
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold


METHODS = ("none", "temperature", "platt")
# A weak pull towards the identity map keeps the fit finite on separable validation rows.
_L2 = 1e-3


@dataclass
class Calibration:
    """An affine map of the head's logits: `softmax(logits * scale + bias)`.

    Args:
        method: `"none"`, `"temperature"` (scale only) or `"platt"` (scale and one bias per class; for two classes
            Platt's sigmoid on the logit difference).
        scale: the logit multiplier, `1 / temperature`.
        bias: one value per class (`None`: no shift).
        cv_log_loss: the cross-validated log-loss of each method tried.
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
        return softmax(np.asarray(logits, dtype=float) * self.scale + (self.bias or 0.0), axis=-1)

    def uncalibrated(self, probabilities: ArrayLike) -> np.ndarray:
        """The raw head's probabilities behind calibrated ones (exact: softmax ignores per-row shifts of the logits)."""
        logits = np.log(np.clip(np.asarray(probabilities, dtype=float), 1e-300, None))
        return softmax((logits - (self.bias or 0.0)) / self.scale, axis=-1)

    def store(self, model) -> None:
        """Write the map into the config of `model` (a PEFT wrapper is unwrapped): it travels with `save_pretrained`."""
        config = (model.get_base_model() if hasattr(model, "get_base_model") else model).config
        config.cls_logit_scale = float(self.scale)
        config.cls_logit_bias = None if self.bias is None else [float(b) for b in self.bias]

    def to_dict(self) -> dict:
        return {**asdict(self), "temperature": self.temperature}


def fit_calibration(logits: ArrayLike, labels: ArrayLike, *, folds: int = 5, seed: int = 0) -> Calibration:
    """Choose and fit the calibration map of a head from its validation logits `(n, num_labels)` and gold labels.

    Each of `METHODS` is scored by stratified `folds`-fold cross-validated log-loss; the best (ties go to the simpler)
    is refitted on all rows. With fewer than two rows of some class, the identity map is returned.
    """
    logits, labels = np.asarray(logits, dtype=float), np.asarray(labels, dtype=int)
    if logits.ndim != 2 or len(logits) != len(labels):
        raise ValueError(f"Calibration needs logits (n, num_labels) and n labels; got {logits.shape}, {len(labels)}.")
    classes = list(range(logits.shape[1]))
    folds = min(folds, int(np.bincount(labels, minlength=len(classes)).min()))
    if folds < 2:
        return Calibration()
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = {}
    for method in METHODS:
        held_out = np.empty_like(logits)
        for train, test in splitter.split(logits, labels):
            fitted = Calibration(method, *_fit(method, logits[train], labels[train]))
            held_out[test] = fitted.probabilities(logits[test])
        scores[method] = float(log_loss(labels, held_out, labels=classes))
    best = min(METHODS, key=lambda method: (round(scores[method], 6), METHODS.index(method)))
    return Calibration(best, *_fit(best, logits, labels), scores)


def _fit(method: str, logits: np.ndarray, labels: np.ndarray) -> tuple[float, list[float] | None]:
    """Penalised maximum likelihood of `(scale, bias)` by L-BFGS; class 0's bias is fixed at 0 (softmax ignores a
    shared shift)."""
    if method == "none":
        return 1.0, None
    logits, labels = torch.as_tensor(logits), torch.as_tensor(labels)
    log_scale = torch.zeros((), dtype=torch.float64, requires_grad=True)
    free_bias = torch.zeros(logits.shape[1] - 1, dtype=torch.float64, requires_grad=method == "platt")
    optimizer = torch.optim.LBFGS([log_scale, free_bias] if method == "platt" else [log_scale], lr=0.5, max_iter=200,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        bias = torch.cat([free_bias.new_zeros(1), free_bias])
        loss = torch.nn.functional.cross_entropy(logits * log_scale.exp() + bias, labels)
        loss = loss + _L2 * (log_scale**2 + (free_bias**2).sum())
        loss.backward()
        return loss

    optimizer.step(closure)
    bias = [0.0, *free_bias.detach().tolist()]
    return float(log_scale.detach().exp()), (bias if method == "platt" else None)


__all__ = ["METHODS", "Calibration", "fit_calibration"]
