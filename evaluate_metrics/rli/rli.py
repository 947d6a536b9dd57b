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
"""RLI (reasoning-label inconsistency) and Readability metrics (CLSGen, arXiv 2604.11801).

Self-contained (the Hub loads this file alone): the same computation as `clsgen_hf.metrics.rli`, which the
clsgen_hf test suite checks this module against.
"""

import warnings

import datasets
import evaluate
import numpy as np
from sklearn.exceptions import UndefinedMetricWarning


_DESCRIPTION = """
RLI (reasoning-label inconsistency) is the share of examples whose generated explanation states a verdict
("Answer: Yes" -> 1) different from the classification head's label (probability >= threshold, or the argmax for
N classes), over the examples whose explanation has a readable verdict (verdict -1 marks an unreadable one):

    RLI = #{readable i : verdict_i != head_label_i} / #{readable i}

Readability, returned alongside, is the share of explanations a verdict can be read from at all:

    readability = #{i : verdict_i != -1} / n

Both come from CLSGen (arXiv 2604.11801), where one fine-tuned LLM has a classification head (a probability) and a
language-model head (an explanation); CLSGen models reach RLI < 0.05 and readability > 0.98. Use the "multiclass"
configuration for one row of N class probabilities per example.
"""

_KWARGS_DESCRIPTION = """
Args:
    probabilities (`list` of `float`, or `list` of `list` of `float` for "multiclass"): the classification head's
        positive-class probability per example, or one row of N class probabilities per example ("multiclass").
    verdicts (`list` of `int`): the label each explanation states, -1 where no verdict can be read.
    threshold (`float`, default 0.5): the head says 1 when probability >= threshold (ignored for "multiclass").
Returns:
    rli (`float`): share of readable examples whose verdict differs from the head's label, from 0 to 1 (lower is
        better); NaN (with a warning) when no verdict is readable.
    readability (`float`): share of examples with a readable verdict, from 0 to 1 (higher is better).
    n (`int`): number of examples given.
    n_unreadable (`int`): number of examples whose verdict is -1.
Examples:
    Example 1, binary; the fourth explanation has no readable verdict, the third contradicts the head:
        >>> rli = evaluate.load("clsgen/rli")
        >>> results = rli.compute(probabilities=[0.9, 0.2, 0.7, 0.4, 0.6], verdicts=[1, 0, 0, -1, 1])
        >>> print(results)
        {'rli': 0.25, 'readability': 0.8, 'n': 5, 'n_unreadable': 1}

    Example 2, three classes:
        >>> rli = evaluate.load("clsgen/rli", "multiclass")
        >>> probabilities = [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1], [0.3, 0.3, 0.4]]
        >>> results = rli.compute(probabilities=probabilities, verdicts=[0, 1, 2, 1, -1])
        >>> print(results)
        {'rli': 0.25, 'readability': 0.8, 'n': 5, 'n_unreadable': 1}
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
class RLI(evaluate.Metric):
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
            raise ValueError("RLI needs at least one example.")
        n_classes = 2 if probabilities.ndim == 1 else probabilities.shape[1]
        if not np.isin(verdicts, range(-1, n_classes)).all():
            raise ValueError(f"`verdicts` must be -1 (unreadable) or a label in 0..{n_classes - 1}.")
        readable = verdicts != -1
        counts = {"n": len(verdicts), "n_unreadable": int((~readable).sum())}
        head = probabilities.argmax(axis=1) if probabilities.ndim == 2 else (probabilities >= threshold).astype(int)
        if not readable.any():
            warnings.warn("RLI is undefined (no readable verdict); NaN.", UndefinedMetricWarning, stacklevel=1)
            return {"rli": float("nan"), "readability": 0.0, **counts}
        inconsistency = float(np.mean(verdicts[readable] != head[readable]))
        return {"rli": inconsistency, "readability": float(readable.mean()), **counts}
