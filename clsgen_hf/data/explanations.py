"""The LM head's training targets: one explanation per row ending in its gold verdict, from a column of rationales or
from a teacher; a class left with none fails the run, since nothing would teach its explanations."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset

from ..errors import UsageError
from ..prompt_template import PromptTemplate
from ..verdicts import DECISION_CUE_COLUMN, NO_VERDICT, VerdictFormat
from .synthesis import synthesize_explanations
from .teachers import Teacher


logger = logging.getLogger(__name__)


def training_explanations(
    rows: Dataset,
    prompt_template: PromptTemplate,
    *,
    rationale_column: str | None = None,
    teacher: Teacher | None = None,
    output_dir: str | Path | None = None,
    **synthesis_kwargs: Any,
) -> Dataset:
    """Prompt-completion-label rows for `CLSGenTrainer`: from `rationale_column`, or written by `teacher`.

    Args:
        rationale_column: a column of rationales; a verdict line is appended where one is missing.
        teacher: asked when there is no `rationale_column`; its answers are cached in
            `output_dir/teacher_cache.jsonl` and the kept rows written to `output_dir/explanations.jsonl`.
        synthesis_kwargs: passed to `synthesize_explanations`.
    """
    if rationale_column:
        return rationale_completions(rows, prompt_template, rationale_column)
    if teacher is None:
        raise ValueError("Give a `rationale_column` or a `teacher`.")
    output_dir = Path(output_dir or ".")
    return synthesize_explanations(
        rows, teacher, prompt_template=prompt_template, cache_path=output_dir / "teacher_cache.jsonl",
        save_to=output_dir / "explanations.jsonl", **synthesis_kwargs,
    )


def rationale_completions(rows: Dataset, prompt_template: PromptTemplate, column: str) -> Dataset:
    """The rows whose `column` rationale states the gold verdict (a missing verdict line is added), as completions."""
    if column not in rows.column_names:
        raise UsageError(f"Rationale column {column!r}: no such column; the columns are: {rows.column_names}.")
    verdicts = prompt_template.verdict_format

    def completion(row):
        text = (row[column] or "").strip()
        if verdicts.read(text) == NO_VERDICT:
            text = f"{text}\n{verdicts.line(row['label'])}"
        return {"completion": [{"role": "assistant", "content": text}]}

    kept = rows.map(completion).filter(lambda row: verdicts.read(row["completion"][0]["content"]) == row["label"])
    logger.info("Rationales from the %r column: %d of %d rows state their gold verdict and are kept.", column,
                len(kept), len(rows))
    lost = sorted(set(rows["label"]) - set(kept["label"]))
    if lost:
        raise UsageError(f"No rationale in the {column!r} column states the gold verdict of class(es) {lost} "
                         f"({', '.join(verdicts.verbalizers[label] for label in lost)}), so nothing teaches their "
                         "explanations: fix the rationales, or let a teacher write them ({teacher}).", teacher=...)
    return kept.select_columns(["prompt", "completion", "label"])


DEFAULT_DECISION_SHARE = 0.5  # the recipe's and the benchmark's share of decision-conditioned training rows


def with_decision_cues(rows: Dataset, verdict_format: VerdictFormat, share: float, seed: int = 0) -> Dataset:
    """`rows` (prompt, completion, label) with a random `share` of them conditioned on their decision: the completion
    starts with the gold label's cue (`VerdictFormat.cue`), named in the `decision_cue` column so that the trainer
    leaves it out of the LM loss. The model learns to explain a given decision, as a teacher told the label does,
    which `predict(..., explain="decision")` asks of it; the other rows keep the natural, paper form."""
    if not 0 <= share <= 1:
        raise UsageError(f"The share of decision-conditioned rows must be in [0, 1], got {share}.")
    chosen = np.random.default_rng(seed).random(len(rows)) < share

    def cue(row, index):
        if not chosen[index]:
            return {DECISION_CUE_COLUMN: ""}
        given = verdict_format.cue(row["label"])
        completion = row["completion"]
        if isinstance(completion, str):
            return {"completion": given + completion, DECISION_CUE_COLUMN: given}
        return {"completion": [{**completion[0], "content": given + completion[0]["content"]}, *completion[1:]],
                DECISION_CUE_COLUMN: given}

    return rows.map(cue, with_indices=True)


__all__ = ["DEFAULT_DECISION_SHARE", "rationale_completions", "training_explanations", "with_decision_cues"]
