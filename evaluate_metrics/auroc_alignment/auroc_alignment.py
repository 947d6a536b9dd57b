# Copyright 2026 The clsgen_hf authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""AUROC-Alignment metric (CLSGen, arXiv 2604.11801).

Self-contained (the Hub loads this file alone): the same computation as `clsgen_hf.metrics.auroc_alignment`,
which the clsgen_hf test suite checks this module against.
"""

import warnings

import datasets
import evaluate
import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import roc_auc_score


_DESCRIPTION = """
AUROC-Alignment measures how well a classifier's probabilities agree with the verdicts its own generated
explanations state. It is the area under the ROC curve of the classification head's probabilities, scored against
the label each explanation ends on ("Answer: Yes" -> 1) instead of the gold label, over the examples whose
explanation has a readable verdict (verdict -1 marks an unreadable one). 1.0 means the head ranks every example its
explanation calls positive above every example its explanation calls negative; 0.5 means no relation.

It comes from CLSGen (arXiv 2604.11801), where one fine-tuned LLM has a classification head (a probability) and a
language-model head (an explanation); good CLSGen models reach 0.95-0.98.

Binary (default): `probabilities` holds the positive-class probability per example. With the "multiclass"
configuration, `probabilities` holds one row of N class probabilities per example and the score is the macro mean
of the one-vs-rest AUROCs over the classes present among the readable verdicts.
"""

_KWARGS_DESCRIPTION = """
Args:
    probabilities (`list` of `float`, or `list` of `list` of `float` for "multiclass"): the classification head's
        positive-class probability per example, or one row of N class probabilities per example ("multiclass").
    verdicts (`list` of `int`): the label each explanation states, -1 where no verdict can be read.
Returns:
    auroc_alignment (`float`): ROC AUC of the probabilities against the readable verdicts, from 0 to 1 (higher is
        better); NaN (with a warning) when fewer than two classes appear among the readable verdicts.
    n (`int`): number of examples given.
    n_unreadable (`int`): number of examples left out because their verdict is -1.
Examples:
    Example 1, binary; the fourth explanation has no readable verdict:
        >>> auroc_alignment = evaluate.load("clsgen/auroc_alignment")
        >>> results = auroc_alignment.compute(
        ...     probabilities=[0.9, 0.2, 0.7, 0.4, 0.6], verdicts=[1, 0, 0, -1, 1]
        ... )
        >>> print(results)
        {'auroc_alignment': 0.75, 'n': 5, 'n_unreadable': 1}

    Example 2, three classes:
        >>> auroc_alignment = evaluate.load("clsgen/auroc_alignment", "multiclass")
        >>> probabilities = [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1], [0.3, 0.3, 0.4]]
        >>> results = auroc_alignment.compute(probabilities=probabilities, verdicts=[0, 1, 2, 1, -1])
        >>> print(results)
        {'auroc_alignment': 1.0, 'n': 5, 'n_unreadable': 1}
"""

_CITATION = """\
@misc{yoon2026clsgen,
  title = {CLSGen: A Dual-Head Fine-Tuning Framework for Joint Probabilistic Classification and \
Verbalized Explanation},
  author = {Yoon, WonJin and Zhu, Kangyu and Bulovic, Ian and Sehy, Autumn and Gao, Yanjun and \
Dligach, Dmitriy and Afshar, Majid and Miller, Timothy A.},
  year = {2026},
  eprint = {2604.11801},
  archivePrefix = {arXiv},
  primaryClass = {cs.CL},
  url = {https://arxiv.org/abs/2604.11801}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AUROCAlignment(evaluate.Metric):
    def _info(self):
        probability = datasets.Value("float64")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "probabilities": (
                        datasets.Sequence(probability) if self.config_name == "multiclass" else probability
                    ),
                    "verdicts": datasets.Value("int32"),
                }
            ),
            reference_urls=["https://arxiv.org/abs/2604.11801"],
        )

    def _compute(self, probabilities, verdicts):
        probabilities, verdicts = np.asarray(probabilities, dtype=float), np.asarray(verdicts, dtype=int)
        if len(verdicts) == 0:
            raise ValueError("AUROC-Alignment needs at least one example.")
        n_classes = 2 if probabilities.ndim == 1 else probabilities.shape[1]
        if not np.isin(verdicts, range(-1, n_classes)).all():
            raise ValueError(f"`verdicts` must be -1 (unreadable) or a label in 0..{n_classes - 1}.")
        readable = verdicts != -1
        counts = {"n": len(verdicts), "n_unreadable": int((~readable).sum())}
        stated, scores = verdicts[readable], probabilities[readable]
        classes = np.unique(stated)
        if len(classes) < 2:
            warnings.warn(
                "AUROC-Alignment is undefined (fewer than two readable classes); NaN.",
                UndefinedMetricWarning,
                stacklevel=1,
            )
            return {"auroc_alignment": float("nan"), **counts}
        if scores.ndim == 1:
            return {"auroc_alignment": float(roc_auc_score(stated, scores)), **counts}
        one_vs_rest = (stated[:, None] == classes).astype(int)  # macro over the classes present
        return {"auroc_alignment": float(roc_auc_score(one_vs_rest, scores[:, classes], average="macro")), **counts}
