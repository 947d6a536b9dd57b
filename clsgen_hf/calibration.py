"""The decision rule of a CLSGen head and the calibration map in it.

The map is one affine transform of the head's logits, `softmax(logits * scale + bias)`, fitted on validation rows:
temperature scaling fixes a head that is too sharp, Platt scaling one shifted from the base rate. Fitted on a few
dozen rows, a map easily does worse than none; so the fit is pulled towards the identity (a penalty worth
`PRIOR_ROWS` rows, whatever the number of rows), and a map replaces a simpler one only when its cross-validated gain
exceeds one standard error of the per-row gains.

The rule (`DecisionRule`: the map, the binary threshold, the label names) lives in the model config
(`cls_logit_scale`, `cls_logit_bias`, `cls_threshold`, `id2label`); an adapter folder, which holds no config of the
model, keeps it in `clsgen_rule.json`. Every save and load path goes through `DecisionRule`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import log_softmax
from sklearn.model_selection import StratifiedKFold

from .configuration_clsgen import LlamaCLSGenConfig


logger = logging.getLogger(__name__)

METHODS = ("none", "temperature", "platt")  # simplest first
PRIOR_ROWS = 2.0  # the pull towards the identity map, in rows' worth of log-loss
MIN_SCALE = 1e-2  # a head that ranks the classes backwards is flattened, not inverted
RULE_FILE = "clsgen_rule.json"


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
        return np.exp(log_softmax(np.asarray(logits, dtype=float) * self.scale + (self.bias or 0.0), axis=-1))

    def uncalibrated(self, probabilities: ArrayLike) -> np.ndarray:
        """The raw head's probabilities behind calibrated ones (exact: softmax ignores per-row shifts of the
        logits)."""
        logits = np.log(np.clip(np.asarray(probabilities, dtype=float), 1e-300, None))
        return np.exp(log_softmax((logits - (self.bias or 0.0)) / self.scale, axis=-1))

    def store(self, model) -> None:
        """Write the map into the config of `model` (a PEFT wrapper is unwrapped): it travels with
        `save_pretrained`."""
        config = _config_of(model)
        config.cls_logit_scale = float(self.scale)
        config.cls_logit_bias = None if self.bias is None else [float(b) for b in self.bias]

    def to_dict(self) -> dict:
        return {**asdict(self), "temperature": self.temperature}


@dataclass
class DecisionRule:
    """How a head's logits become a probability and a decision: the calibration map, the binary threshold on the
    positive-class probability, and the label names. Read from and written to configs and saved folders here only.
    """

    cls_logit_scale: float = 1.0
    cls_logit_bias: list[float] | None = None
    cls_threshold: float = 0.5
    id2label: dict[int, str] | None = None

    @property
    def calibration(self) -> Calibration:
        method = "none" if self.cls_logit_bias is None and self.cls_logit_scale == 1.0 else (
            "temperature" if self.cls_logit_bias is None else "platt")
        return Calibration(method, self.cls_logit_scale, self.cls_logit_bias)

    def probabilities(self, logits: ArrayLike) -> np.ndarray:
        """Calibrated class probabilities of raw head logits `(n, num_labels)`."""
        return self.calibration.probabilities(logits)

    @classmethod
    def from_config(cls, config) -> DecisionRule:
        """The rule in a model config, its dict, or a model's (a PEFT wrapper is unwrapped); a serving classifier's
        config has the scale folded into its weights, so it holds no `cls_logit_scale`."""
        config = _config_of(config)
        get = config.get if isinstance(config, dict) else lambda name, default=None: getattr(config, name, default)
        names = get("id2label")
        return cls(float(get("cls_logit_scale", 1.0)), get("cls_logit_bias"), float(get("cls_threshold", 0.5)),
                   {int(k): v for k, v in names.items()} if names else None)

    def store(self, model) -> None:
        """Write the rule into the config of `model` (a PEFT wrapper is unwrapped)."""
        config = _config_of(model)
        Calibration(scale=self.cls_logit_scale, bias=self.cls_logit_bias).store(config)
        config.cls_threshold = float(self.cls_threshold)
        if self.id2label:
            config.id2label = dict(self.id2label)
            config.label2id = {name: i for i, name in self.id2label.items()}

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write `clsgen_rule.json` into `folder` (beside an adapter, which carries no config of the model)."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / RULE_FILE).write_text(json.dumps(asdict(self), indent=2, ensure_ascii=False) + "\n",
                                              encoding="utf-8")

    @classmethod
    def from_folder(cls, folder: str | os.PathLike | None) -> DecisionRule | None:
        """The rule saved in `folder`: its `clsgen_rule.json`, else its CLSGen (or serving) `config.json`; `None`
        when it holds neither."""
        for name in (RULE_FILE, "config.json"):
            path = Path(folder or "") / name
            if folder is not None and path.is_file():
                values = json.loads(path.read_text(encoding="utf-8"))
                if name == RULE_FILE or values.get("model_type") == LlamaCLSGenConfig.model_type or (
                        "cls_threshold" in values):
                    return cls.from_config(values)
        return None


def restore_rule(model, *folders: str | os.PathLike | None) -> DecisionRule | None:
    """Store into `model` the rule saved in the first of `folders` that holds one (an adapter's folder, then e.g. its
    run's); without one, warn: the model then decides with the identity map at 0.5."""
    rule = next((rule for folder in folders if (rule := DecisionRule.from_folder(folder)) is not None), None)
    if rule is None:
        logger.warning("%s holds no decision rule (%s or a CLSGen config.json): the head's probabilities are "
                       "uncalibrated and the threshold is 0.5, whatever rule the model was trained with.",
                       folders[0], RULE_FILE)
    else:
        rule.store(model)
    return rule


def fit_calibration(logits: ArrayLike, labels: ArrayLike, *, folds: int = 5, seed: int = 0) -> Calibration:
    """Choose and fit the calibration map of a head from its validation logits `(n, num_labels)` and gold labels.

    Each of `METHODS` is scored by stratified `folds`-fold cross-validated log-loss, row by row; a method replaces
    the simpler one chosen so far only if it gains more than one standard error of its per-row gains. The choice is
    refitted on all rows. With fewer than two rows of some class, the identity map is returned.
    """
    logits, labels = np.asarray(logits, dtype=float), np.asarray(labels, dtype=int)
    if logits.ndim != 2 or len(logits) != len(labels):
        raise ValueError(f"Calibration needs logits (n, num_labels) and n labels; got {logits.shape}, {len(labels)}.")
    folds = min(folds, int(np.bincount(labels, minlength=logits.shape[1]).min()))
    if folds < 2:
        return Calibration()
    losses = {method: np.empty(len(labels)) for method in METHODS}  # each row's held-out log-loss
    for train, test in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(logits, labels):
        for method in METHODS:
            fitted = Calibration(method, *_fit(method, logits[train], labels[train]))
            losses[method][test] = -np.log(fitted.probabilities(logits[test])[np.arange(len(test)), labels[test]])
    best = METHODS[0]
    for method in METHODS[1:]:
        gains = losses[best] - losses[method]
        if gains.mean() > gains.std(ddof=1) / np.sqrt(len(gains)):
            best = method
    scores = {method: float(loss.mean()) for method, loss in losses.items()}
    return Calibration(best, *_fit(best, logits, labels), scores)


def _fit(method: str, logits: np.ndarray, labels: np.ndarray) -> tuple[float, list[float] | None]:
    """Penalised maximum likelihood of `(scale, bias)` by Newton's method (the log-loss is convex in them): the
    penalty `PRIOR_ROWS / n * |(scale, bias) - (1, 0)|^2` pulls towards the identity; class 0's bias is fixed at 0
    (softmax ignores a shared shift)."""
    if method == "none":
        return 1.0, None
    n, num_labels = logits.shape
    features = [logits[:, :, None]]  # d(scaled logits)/d(parameters): (n, num_labels, parameters)
    if method == "platt":
        features.append(np.broadcast_to(np.eye(num_labels)[:, 1:], (n, num_labels, num_labels - 1)))
    jacobian = np.concatenate(features, axis=2)
    identity = np.eye(jacobian.shape[2])[0]
    onehot, penalty = np.eye(num_labels)[labels], PRIOR_ROWS / n

    def objective(theta: np.ndarray) -> float:
        log_probabilities = log_softmax(jacobian @ theta, axis=-1)
        return -log_probabilities[np.arange(n), labels].mean() + penalty * ((theta - identity) ** 2).sum()

    theta, value = identity, objective(identity)
    for _ in range(100):
        probabilities = np.exp(log_softmax(jacobian @ theta, axis=-1))
        gradient = np.einsum("nkp,nk->p", jacobian, probabilities - onehot) / n + 2 * penalty * (theta - identity)
        expected = np.einsum("nkp,nk->np", jacobian, probabilities)
        hessian = (np.einsum("nkp,nkq->pq", jacobian * probabilities[..., None], jacobian) - expected.T @ expected) / n
        step = np.linalg.solve(hessian + 2 * penalty * np.eye(len(theta)), gradient)
        decrease = float(gradient @ step)
        if decrease < 1e-12:
            break
        rate = 1.0
        while (new_value := objective(theta - rate * step)) > value - 1e-4 * rate * decrease and rate > 1e-6:
            rate /= 2  # backtracking line search
        theta, value = theta - rate * step, new_value
    bias = [0.0, *theta[1:].tolist()] if method == "platt" else None
    return max(float(theta[0]), MIN_SCALE), bias


def _config_of(model):
    """The config of a model (a PEFT wrapper's base model's), or the config itself."""
    model = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(model, "config", model)


__all__ = ["METHODS", "RULE_FILE", "Calibration", "DecisionRule", "fit_calibration", "restore_rule"]
