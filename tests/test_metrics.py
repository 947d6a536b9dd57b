"""The metric math (`clsgen_hf.metrics`) against direct scikit-learn computations and hand-worked cases, and the
self-contained evaluate modules (`evaluate_metrics/`) against the library."""

import doctest
import math
import re
import sys
import warnings

import evaluate
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.calibration import calibration_curve
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    cohen_kappa_score,
    f1_score,
    log_loss,
    roc_auc_score,
)

from clsgen_hf.metric_modules import METRIC_NAMES, load_metric, prepare_spaces
from clsgen_hf.metrics import (
    alignment_report,
    auroc_alignment,
    classification_report,
    expected_calibration_error,
    r_lkappa,
    reliability_curve,
    rli,
    tune_threshold,
)
from clsgen_hf.verdicts import VerdictFormat


LIBRARY = {"auroc_alignment": auroc_alignment, "r_lkappa": r_lkappa, "rli": rli}

# Worked by hand. Readable examples: probabilities (.9, .2, .7, .6), verdicts (1, 0, 0, 1), head labels (1, 0, 1, 1).
# AUROC: positives {.9, .6} vs negatives {.2, .7}: 3 of 4 pairs ordered -> 0.75.
# Kappa: p_o = 3/4, p_e = 1/2 * 3/4 + 1/2 * 1/4 = 1/2 -> (3/4 - 1/2) / (1/2) = 0.5. RLI 1/4, readability 4/5.
# At threshold 0.65 the head says (1, 0, 1, 0): p_o = 1/2, p_e = 1/2 -> kappa 0, RLI 1/2.
BINARY = dict(probabilities=[0.9, 0.2, 0.7, 0.4, 0.6], verdicts=[1, 0, 0, -1, 1])
BINARY_EXPECTED = {
    "auroc_alignment": {"auroc_alignment": 0.75, "n": 5, "n_unreadable": 1},
    "r_lkappa": {"r_lkappa": 0.5, "n": 5, "n_unreadable": 1},
    "rli": {"rli": 0.25, "readability": 0.8, "n": 5, "n_unreadable": 1},
}


def same(a: dict, b: dict) -> bool:
    """Equal dicts, NaN equal to NaN, floats to 1e-9 (one-vs-rest macro vs a loop may differ in the last bits)."""
    return a.keys() == b.keys() and all(
        (math.isnan(a[k]) and math.isnan(b[k])) or math.isclose(a[k], b[k], rel_tol=1e-9, abs_tol=1e-12) for k in a
    )


@pytest.fixture(scope="module")
def modules():
    """Each evaluate module, binary (None) and "multiclass", loaded once by path and kept in memory."""
    return {
        (name, config): load_metric(name, config_name=config, keep_in_memory=True)
        for name in METRIC_NAMES
        for config in (None, "multiclass")
    }


def module_compute(modules, name, probabilities, verdicts, threshold=0.5):
    config = "multiclass" if np.ndim(probabilities) == 2 else None
    kwargs = {} if name == "auroc_alignment" else {"threshold": threshold}
    return modules[name, config].compute(probabilities=np.asarray(probabilities).tolist(), verdicts=verdicts, **kwargs)


# --------------------------------------------------------------------------------------------------- vs scikit-learn


@st.composite
def alignment_inputs(draw):
    """(probabilities, verdicts, threshold): binary (n,) or N-class (n, N) with unreadable (-1) verdicts mixed in.

    Probabilities come from a coarse grid so that ties, single-class and all-unreadable sets all occur.
    """
    n = draw(st.integers(1, 25))
    n_classes = draw(st.sampled_from([2, 2, 3, 4]))
    verdicts = draw(st.lists(st.integers(-1, n_classes - 1), min_size=n, max_size=n))
    if n_classes == 2 and draw(st.booleans()):
        probabilities = np.array(draw(st.lists(st.integers(0, 20), min_size=n, max_size=n))) / 20
    else:
        row = st.lists(st.integers(1, 9), min_size=n_classes, max_size=n_classes)
        weights = np.array(draw(st.lists(row, min_size=n, max_size=n)))
        probabilities = weights / weights.sum(axis=1, keepdims=True)
    return probabilities, verdicts, draw(st.sampled_from([0.5, 0.3, 0.65]))


def sklearn_alignment(probabilities, verdicts, threshold):
    """The four numbers straight from scikit-learn, written independently of `clsgen_hf.metrics`."""
    verdicts = np.asarray(verdicts)
    readable = verdicts != -1
    stated, probs = verdicts[readable], probabilities[readable]
    head = probs.argmax(axis=1) if probs.ndim == 2 else (probs >= threshold).astype(int)
    classes = np.unique(stated)
    counts = {"n": len(verdicts), "n_unreadable": int((~readable).sum())}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if len(classes) < 2:
            auroc = math.nan
        elif probs.ndim == 1 or probs.shape[1] == 2:  # two columns: the second is the positive class
            auroc = roc_auc_score(stated, probs if probs.ndim == 1 else probs[:, 1])
        elif len(classes) == probs.shape[1]:
            auroc = roc_auc_score(stated, probs, multi_class="ovr", average="macro")
        else:  # macro over the classes present
            auroc = np.mean([roc_auc_score(stated == c, probs[:, c]) for c in classes])
        kappa = cohen_kappa_score(stated, head) if readable.any() else math.nan  # NaN for a single label
        inconsistency = 1 - accuracy_score(stated, head) if readable.any() else math.nan
    return {
        "auroc_alignment": {"auroc_alignment": float(auroc), **counts},
        "r_lkappa": {"r_lkappa": float(kappa), **counts},
        "rli": {"rli": float(inconsistency), "readability": float(readable.mean()), **counts},
    }


@settings(max_examples=100, deadline=None)
@given(alignment_inputs())
def test_alignment_metrics_equal_sklearn_in_library_and_modules(modules, case):
    probabilities, verdicts, threshold = case
    expected = sklearn_alignment(probabilities, verdicts, threshold)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        for name, metric in LIBRARY.items():
            kwargs = {} if name == "auroc_alignment" else {"threshold": threshold}
            assert same(metric(probabilities, verdicts, **kwargs), expected[name]), name
            assert same(module_compute(modules, name, probabilities, verdicts, threshold), expected[name]), name


# --------------------------------------------------------------------------------------------------- hand-worked


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_binary_hand_worked_case(modules, name):
    assert LIBRARY[name](**BINARY) == BINARY_EXPECTED[name]
    assert module_compute(modules, name, **BINARY) == BINARY_EXPECTED[name]


def test_threshold_changes_head_labels(modules):
    assert r_lkappa(**BINARY, threshold=0.65)["r_lkappa"] == 0.0
    assert rli(**BINARY, threshold=0.65)["rli"] == 0.5
    assert module_compute(modules, "r_lkappa", **BINARY, threshold=0.65)["r_lkappa"] == 0.0
    assert module_compute(modules, "rli", **BINARY, threshold=0.65)["rli"] == 0.5


def test_auroc_alignment_counts_ties_as_half():
    # Pairs (.8 > .5), (.8 > .2), (.5 = .5 -> 1/2), (.5 > .2): 3.5 / 4.
    assert auroc_alignment([0.8, 0.5, 0.5, 0.2], [1, 1, 0, 0])["auroc_alignment"] == 0.875


def test_three_class_hand_worked_case(modules):
    # Head argmax (0, 1, 2, 0) vs verdicts (0, 1, 2, 1); the fifth explanation is unreadable.
    # Kappa: p_o = 3/4; verdict shares (1/4, 2/4, 1/4), head shares (2/4, 1/4, 1/4): p_e = 5/16 -> (12 - 5) / 11.
    # AUROC: each class's probability ranks its own verdicts first -> 1.0 for every class.
    probabilities = [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1], [0.3, 0.3, 0.4]]
    verdicts = [0, 1, 2, 1, -1]
    expected = {"auroc_alignment": 1.0, "r_lkappa": 7 / 11, "rli": 0.25}
    for name, value in expected.items():
        assert LIBRARY[name](probabilities, verdicts)[name] == pytest.approx(value)
        assert module_compute(modules, name, probabilities, verdicts)[name] == pytest.approx(value)


def test_alignment_report_reads_verdicts_with_the_verdict_format():
    explanations = ["The scan is clear.\nAnswer: Yes", "Answer: No", "**Answer:** No", "I cannot tell.",
                    "Answer:\nYes"]
    report = alignment_report([0.9, 0.2, 0.7, 0.4, 0.6], explanations)
    assert report == {
        "auroc_alignment": 0.75, "r_lkappa": 0.5, "rli": 0.25, "readability": 0.8, "n": 5, "n_unreadable": 1
    }
    # Only the format's own verdict lines count: neither other prefixes nor a bare final word.
    unread = ["The scan is clear.\nAnswer: Yes", "Answer: No", "**Final answer:** No", "I cannot tell.", "Yes."]
    assert alignment_report([0.9, 0.2, 0.7, 0.4, 0.6], unread)["n_unreadable"] == 3


def test_alignment_report_with_three_verbalizers_and_a_custom_prefix():
    fmt = VerdictFormat({0: "Low", 1: "Medium", 2: "High"}, prefix="Risk:")
    explanations = ["Risk: Low", "Risk: Medium", "Risk: High", "Risk: Low"]
    report = alignment_report(np.eye(3)[[0, 1, 2, 1]], explanations, verdict_format=fmt)
    assert (report["rli"], report["readability"], report["n_unreadable"]) == (0.25, 1.0, 0)
    answers = [text.replace("Risk:", "Answer:") for text in explanations]
    with pytest.warns(UndefinedMetricWarning):
        assert alignment_report(np.eye(3)[[0, 1, 2, 1]], answers, verdict_format=fmt)["n_unreadable"] == 4


# --------------------------------------------------------------------------------------------------- undefined, errors


@pytest.mark.parametrize(
    "name, probabilities, verdicts, defined",
    [
        ("auroc_alignment", [0.9, 0.2, 0.7], [1, 1, -1], {}),  # one readable class
        ("auroc_alignment", [0.9, 0.2], [-1, -1], {}),  # nothing readable
        ("r_lkappa", [0.9, 0.8], [1, 1], {}),  # verdicts and head both say 1 only: kappa is 0 / 0
        ("r_lkappa", [0.9, 0.2], [-1, -1], {}),
        ("rli", [0.9, 0.2], [-1, -1], {"readability": 0.0}),
    ],
)
def test_undefined_is_nan_with_a_warning(modules, name, probabilities, verdicts, defined):
    with pytest.warns(UndefinedMetricWarning):
        result = LIBRARY[name](probabilities, verdicts)
    with pytest.warns(UndefinedMetricWarning):
        from_module = module_compute(modules, name, probabilities, verdicts)
    assert math.isnan(result[name]) and same(result, from_module)
    assert {k: result[k] for k in defined} == defined


def test_kappa_is_defined_when_only_the_verdicts_are_single_class():
    # Verdicts all 1, head (1, 0): p_o = 1/2 = p_e -> 0, while AUROC-Alignment is undefined.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert r_lkappa([0.9, 0.2], [1, 1])["r_lkappa"] == 0.0


@pytest.mark.parametrize("name", METRIC_NAMES)
@pytest.mark.parametrize(
    "probabilities, verdicts, message",
    [([], [], "empty|at least one"), ([0.1, 0.2], [1], "Mismatch|per probability"), ([0.1], [2], "verdicts")],
)
def test_bad_input_raises_value_error(modules, name, probabilities, verdicts, message):
    with pytest.raises(ValueError, match=message):
        LIBRARY[name](probabilities, verdicts)
    with pytest.raises(ValueError, match=message):
        module_compute(modules, name, probabilities, verdicts)


def test_alignment_report_rejects_mismatched_explanations():
    with pytest.raises(ValueError, match="per probability"):
        alignment_report([0.9, 0.2], ["Answer: Yes"])


# --------------------------------------------------------------------------------------------------- classification


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 40), st.integers(0, 2**32 - 1))
def test_binary_classification_report_equals_sklearn(n, seed):
    rng = np.random.default_rng(seed)
    labels = np.r_[0, 1, rng.integers(0, 2, n - 2)]
    probabilities = np.round(rng.random(n), 2)
    report = classification_report(probabilities, labels)
    assert report["auroc"] == pytest.approx(roc_auc_score(labels, probabilities))
    assert report["auprc"] == pytest.approx(average_precision_score(labels, probabilities))
    assert report["f1"] == pytest.approx(f1_score(labels, probabilities >= 0.5, zero_division=0))
    assert report["brier"] == pytest.approx(brier_score_loss(labels, probabilities))
    assert report["log_loss"] == pytest.approx(log_loss(labels, probabilities))
    frequency, confidence = calibration_curve(labels, probabilities, n_bins=10)
    filled = [row for row in report["reliability"] if row["count"]]
    assert [row["frequency"] for row in filled] == pytest.approx(frequency)
    assert [row["confidence"] for row in filled] == pytest.approx(confidence)
    assert sum(row["count"] for row in report["reliability"]) == n == report["n"]


def test_multiclass_classification_report_equals_sklearn():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(4), size=50)
    labels = np.r_[0, 1, 2, 3, rng.integers(0, 4, 46)]
    report = classification_report(probabilities, labels)
    assert report["auroc"] == pytest.approx(roc_auc_score(labels, probabilities, multi_class="ovr"))
    assert report["auprc"] == pytest.approx(average_precision_score(np.eye(4)[labels], probabilities))
    assert report["f1"] == pytest.approx(f1_score(labels, probabilities.argmax(1), average="macro"))
    assert report["brier"] == pytest.approx(brier_score_loss(labels, probabilities, labels=[0, 1, 2, 3]))
    assert report["log_loss"] == pytest.approx(log_loss(labels, probabilities))
    assert "threshold" not in report


def test_tune_threshold_picks_the_known_optimum():
    # Predicting positive for p >= t: t=.8 -> F1 2/3, t=.4 -> 1/2, t=.35 -> 4/5 (TP 2, FP 1), t=.1 -> 2/3.
    probabilities, labels = [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]
    assert tune_threshold(probabilities, labels) == 0.35
    report = classification_report(
        [0.3, 0.36, 0.9], [0, 1, 1], validation_probabilities=probabilities, validation_labels=labels
    )
    assert report["threshold"] == 0.35 and report["f1_at_threshold"] == 1.0 and report["f1"] == pytest.approx(2 / 3)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10), st.integers(0, 1)), min_size=2, max_size=30))
def test_tuned_threshold_beats_every_candidate(pairs):
    probabilities, labels = np.array([p / 10 for p, _ in pairs]), np.array([y for _, y in pairs])
    if len(set(labels)) < 2:
        return
    best = f1_score(labels, probabilities >= tune_threshold(probabilities, labels))
    assert all(best >= f1_score(labels, probabilities >= t) for t in probabilities)


def test_expected_calibration_error_hand_worked():
    # Two bins. [0, .5]: confidences .05 .15 .25 (mean .15), 1 positive of 3 -> 3/4 * |1/3 - .15| = .1375.
    # (.5, 1]: .95, positive -> 1/4 * .05 = .0125. Total .15.
    assert expected_calibration_error([0.05, 0.15, 0.25, 0.95], [0, 0, 1, 1], n_bins=2) == pytest.approx(0.15)
    # N classes use the top-class probability: .6 correct -> 1/2 * .4, .9 wrong -> 1/2 * .9.
    assert expected_calibration_error([[0.6, 0.4], [0.1, 0.9]], [0, 0]) == pytest.approx(0.65)


def test_reliability_curve_marks_empty_bins_nan():
    curve = reliability_curve([0.05, 0.95], [0, 1], n_bins=4)
    assert [row["count"] for row in curve] == [1, 0, 0, 1]
    assert math.isnan(curve[1]["confidence"]) and curve[3]["bin_lower"] == 0.75


def test_classification_report_errors():
    with pytest.raises(ValueError, match="not both"):
        classification_report([0.2, 0.8], [0, 1], threshold=0.3, validation_probabilities=[0.2], validation_labels=[0])
    with pytest.raises(ValueError, match="binary"):
        classification_report([[0.2, 0.8]], [1], threshold=0.3)
    with pytest.raises(ValueError, match="both classes"):
        tune_threshold([0.2, 0.8], [1, 1])
    with pytest.raises(ValueError, match="labels"):
        classification_report([0.2, 0.8], [0, -1])


# --------------------------------------------------------------------------------------------------- doctests


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_module_and_card_doctests_pass(name, tmp_path, monkeypatch):
    """The modules' docstring examples and their cards' examples, run as written: `evaluate.load("clsgen/<name>")`
    finds the module in a local `clsgen/<name>/` folder (evaluate's first lookup, no network)."""
    folder = prepare_spaces(tmp_path / "clsgen")[METRIC_NAMES.index(name)]
    monkeypatch.chdir(tmp_path)
    module = sys.modules[type(evaluate.load(f"clsgen/{name}")).__module__]
    in_module = doctest.testmod(module)
    card = re.sub(r"^```\w*$", "", (folder / "README.md").read_text(), flags=re.MULTILINE)  # fences end outputs
    runner = doctest.DocTestRunner()
    runner.run(doctest.DocTestParser().get_doctest(card, {}, f"{name}/README.md", str(folder), 0))
    in_card = runner.summarize(verbose=False)
    assert in_module.attempted >= 4 and in_module.failed == 0
    assert in_card.attempted >= 4 and in_card.failed == 0


def test_loops_and_ends_at_verdict():
    from clsgen_hf.metrics import generation_report, has_loop

    loop = "It does not report the abstract on the abstract on the abstract on the abstract"
    assert has_loop(loop)
    assert not has_loop("The abstract reports the outcome. The abstract reports nothing else.\nAnswer: No")
    assert not has_loop("") and not has_loop(None)
    report = generation_report([loop, "Fine.\nAnswer: Yes", "Fine.\nAnswer: Yes\nMore", None])
    assert report == {"loop_rate": 0.25, "ends_at_verdict": 0.25}
