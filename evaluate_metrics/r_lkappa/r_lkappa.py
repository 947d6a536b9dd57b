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
"""R-LKappa metric (CLSGen, arXiv 2604.11801).

Self-contained (the Hub loads this file alone): the same computation as `clsgen_hf.metrics.r_lkappa`, which the
clsgen_hf test suite checks this module against.
"""

import warnings

import datasets
import evaluate
import numpy as np
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import cohen_kappa_score


_DESCRIPTION = """
R-LKappa (reasoning-label kappa) measures how often a classifier's label agrees with the verdict its own generated
explanation states, beyond chance. It is Cohen's kappa between the label each explanation ends on ("Answer: Yes"
-> 1) and the classification head's label (probability >= threshold, or the argmax for N classes), over the
examples whose explanation has a readable verdict (verdict -1 marks an unreadable one):

    kappa = (p_o - p_e) / (1 - p_e)

with p_o the observed agreement and p_e the agreement expected from the two label distributions alone. 1 is
perfect agreement, 0 chance-level agreement, negative values worse than chance.

It comes from CLSGen (arXiv 2604.11801), where one fine-tuned LLM has a classification head (a probability) and a
language-model head (an explanation); CLSGen models reach 0.61-0.70. Use the "multiclass" configuration for one row
of N class probabilities per example.
"""

_KWARGS_DESCRIPTION = """
Args:
    probabilities (`list` of `float`, or `list` of `list` of `float` for "multiclass"): the classification head's
        positive-class probability per example, or one row of N class probabilities per example ("multiclass").
    verdicts (`list` of `int`): the label each explanation states, -1 where no verdict can be read.
    threshold (`float`, default 0.5): the head says 1 when probability >= threshold (ignored for "multiclass").
Returns:
    r_lkappa (`float`): Cohen's kappa, from -1 to 1 (higher is better); NaN (with a warning) when verdicts and head
        labels together use a single label (kappa is 0 / 0) or no verdict is readable.
    n (`int`): number of examples given.
    n_unreadable (`int`): number of examples left out because their verdict is -1.
Examples:
    Example 1, binary; the fourth explanation has no readable verdict:
        >>> r_lkappa = evaluate.load("clsgen/r_lkappa")
        >>> results = r_lkappa.compute(probabilities=[0.9, 0.2, 0.7, 0.4, 0.6], verdicts=[1, 0, 0, -1, 1])
        >>> print(results)
        {'r_lkappa': 0.5, 'n': 5, 'n_unreadable': 1}

    Example 2, a higher threshold turns the fifth example's head label to 0:
        >>> results = r_lkappa.compute(
        ...     probabilities=[0.9, 0.2, 0.7, 0.4, 0.6], verdicts=[1, 0, 0, -1, 1], threshold=0.65
        ... )
        >>> print(results)
        {'r_lkappa': 0.0, 'n': 5, 'n_unreadable': 1}

    Example 3, three classes:
        >>> r_lkappa = evaluate.load("clsgen/r_lkappa", "multiclass")
        >>> probabilities = [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1], [0.3, 0.3, 0.4]]
        >>> results = r_lkappa.compute(probabilities=probabilities, verdicts=[0, 1, 2, 1, -1])
        >>> print(round(results["r_lkappa"], 4))
        0.6364
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
class RLKappa(evaluate.Metric):
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

    def _compute(self, probabilities, verdicts, threshold=0.5):
        probabilities, verdicts = np.asarray(probabilities, dtype=float), np.asarray(verdicts, dtype=int)
        if len(verdicts) == 0:
            raise ValueError("R-LKappa needs at least one example.")
        n_classes = 2 if probabilities.ndim == 1 else probabilities.shape[1]
        if not np.isin(verdicts, range(-1, n_classes)).all():
            raise ValueError(f"`verdicts` must be -1 (unreadable) or a label in 0..{n_classes - 1}.")
        readable = verdicts != -1
        counts = {"n": len(verdicts), "n_unreadable": int((~readable).sum())}
        head = probabilities.argmax(axis=1) if probabilities.ndim == 2 else (probabilities >= threshold).astype(int)
        stated, head = verdicts[readable], head[readable]
        if len(np.union1d(stated, head)) < 2:
            warnings.warn(
                "R-LKappa is undefined (a single label, or nothing readable); NaN.",
                UndefinedMetricWarning,
                stacklevel=1,
            )
            return {"r_lkappa": float("nan"), **counts}
        return {"r_lkappa": float(cohen_kappa_score(stated, head)), **counts}
