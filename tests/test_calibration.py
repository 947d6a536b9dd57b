"""Post-hoc calibration of the head: the map is chosen by cross-validation, stored in the config, and applied wherever
probabilities come out; the head stays float32 whatever dtype the backbone is cast to."""

import numpy as np
import pytest
import torch

from clsgen_hf import LlamaForCLSGen, predict
from clsgen_hf.calibration import Calibration, fit_calibration
from clsgen_hf.metrics import classification_report

from .toy import tiny_config, tiny_model_for


def _shifted_head(n=400, seed=0):
    """A head that ranks well but puts P(yes) far below a 59% base rate, and too sharply."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.59).astype(int)
    margin = 3.0 * (1.5 * (labels - 0.5) + rng.normal(0, 1, n) - 2.0)
    return np.stack([np.zeros(n), margin], axis=1), labels


def test_platt_scaling_fixes_a_shifted_head():
    logits, labels = _shifted_head()
    calibration = fit_calibration(logits[:200], labels[:200])
    assert calibration.method == "platt" and calibration.bias[1] > 1
    assert calibration.cv_log_loss["platt"] < calibration.cv_log_loss["temperature"] < calibration.cv_log_loss["none"]
    raw = torch.tensor(logits[200:]).softmax(-1).numpy()[:, 1]
    calibrated = calibration.probabilities(logits[200:])[:, 1]
    before, after = classification_report(raw, labels[200:]), classification_report(calibrated, labels[200:])
    assert after["ece"] < before["ece"] / 3 and after["log_loss"] < before["log_loss"]
    # near the base rate (the fit's pull towards the identity keeps it a little towards the raw head, at ~0.1)
    assert abs(calibrated.mean() - labels[200:].mean()) < 0.1
    assert raw.mean() < 0.2


def test_a_calibrated_head_is_left_nearly_alone():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, size=(400, 3))
    labels = np.array([rng.choice(3, p=p) for p in torch.tensor(logits).softmax(-1).numpy()])
    calibration = fit_calibration(logits, labels)
    assert calibration.method in ("none", "temperature")
    assert calibration.scale == pytest.approx(1.0, abs=0.2)


def test_too_few_rows_of_a_class_give_the_identity():
    calibration = fit_calibration(np.zeros((5, 2)), [0, 0, 0, 0, 1])
    assert calibration == Calibration()


def test_stored_map_applies_to_forward_generate_and_predict(smollm2_tokenizer, tmp_path):
    model = tiny_model_for(smollm2_tokenizer).eval()
    prompts = ["The trial improved survival. Improved?", "No change. Improved?"]
    raw = predict(model, smollm2_tokenizer, prompts, max_new_tokens=0, show_progress=False)
    calibration = Calibration("platt", scale=0.5, bias=[0.0, 2.0])
    calibration.store(model)
    model.save_pretrained(tmp_path)
    reloaded = LlamaForCLSGen.from_pretrained(tmp_path).eval()
    assert (reloaded.config.cls_logit_scale, reloaded.config.cls_logit_bias) == (0.5, [0.0, 2.0])

    ids = smollm2_tokenizer(prompts[0], return_tensors="pt").input_ids
    with torch.no_grad():
        out = reloaded(ids)
    expected = calibration.probabilities(out.cls_logits.numpy())
    torch.testing.assert_close(out.cls_probabilities, torch.tensor(expected, dtype=torch.float32))
    generated = reloaded.classify_and_generate(ids, max_new_tokens=2, do_sample=False)
    torch.testing.assert_close(generated.probabilities, out.cls_probabilities)
    records = predict(reloaded, smollm2_tokenizer, prompts, max_new_tokens=3, show_progress=False)
    raw_logits = np.log(np.array([r["probability"] for r in raw]))  # the raw softmax, up to a per-row constant
    torch.testing.assert_close(torch.tensor([r["probability"] for r in records]),
                               torch.tensor(calibration.probabilities(raw_logits), dtype=torch.float32),
                               atol=1e-5, rtol=0)


def test_head_stays_float32_under_casts_and_autocast():
    model = LlamaForCLSGen(tiny_config()).eval()
    ids = torch.tensor([[1, 5, 7, 9]])
    model.to(torch.bfloat16)
    assert model.score.weight.dtype == torch.float32 and model.lm_head.weight.dtype == torch.bfloat16
    assert model(ids).cls_logits.dtype == torch.float32  # no dtype mismatch in the bf16 backbone's forward
    model.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids)
    assert out.cls_logits.dtype == torch.float32 and out.cls_probabilities.dtype == torch.float32


def _simulated(rng, n, scale=1.0, shift=0.0):
    """Binary head logits `[0, scale * z + shift]` of rows whose true log-odds are `z ~ N(0, 2)`: calibrated when
    `scale=1, shift=0`."""
    z = rng.normal(0, 2, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return np.stack([np.zeros(n), scale * z + shift], axis=1), labels


def _excess_log_loss(draws, n, seed, **head):
    """Mean test log-loss of the fitted map minus the identity's, over `draws` validation sets of `n` rows."""
    rng = np.random.default_rng(seed)
    test_logits, test_labels = _simulated(rng, 4000, **head)
    rows = np.arange(len(test_labels))

    def log_loss_of(calibration):
        return -np.log(calibration.probabilities(test_logits)[rows, test_labels]).mean()

    identity, excess = log_loss_of(Calibration()), []
    while len(excess) < draws:
        logits, labels = _simulated(rng, n, **head)
        if len(set(labels)) == 2:
            excess.append(log_loss_of(fit_calibration(logits, labels)) - identity)
    return float(np.mean(excess))


@pytest.mark.parametrize("n", [16, 24, 32, 48])
def test_small_validation_sets_never_make_calibrated_logits_worse(n):
    """Fitted on a few dozen calibrated rows, the map costs at most 0.01 nats over the identity on average, and still
    fixes clearly overconfident logits (x3 + 1)."""
    assert _excess_log_loss(80, n, seed=n) <= 0.01
    assert _excess_log_loss(20, n, seed=n, scale=3.0, shift=1.0) <= -0.05
