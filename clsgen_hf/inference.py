"""`predict` (wrapped by the `clsgen` pipeline and `clsgen-hf predict`): the class probability from the prefill of each
prompt, the explanation generated from the same cache; for any causal LM, the probability can come instead from the
verbalizers' next-token probabilities after the explanation (scored from the prompt's cache too).

Explanations stop at their verdict line and cannot loop (a repeated n-gram of the generated tokens is banned; text
copied from the prompt is not). In `explain="decision"` mode the head decides first and the explanation is generated
after its decision cue (the verdict line), from the same prefill.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import torch
from numpy.typing import ArrayLike
from tqdm.auto import tqdm
from transformers import (
    AutoModelForCausalLM,
    LogitsProcessor,
    LogitsProcessorList,
    Pipeline,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.pipelines import PIPELINE_REGISTRY

from .calibration import RULE_FILE, DecisionRule
from .loading import prepare_tokenizer
from .metrics import head_labels, positive_scores, tune_threshold
from .modeling_clsgen import CACHE_FIELD
from .prompt_template import Messages, PromptTemplate, encode_prompts
from .verdicts import DEFAULT_VERBALIZERS, DEFAULT_VERDICT_PREFIX, VerdictFormat


logger = logging.getLogger(__name__)


ProbabilitySource = Literal["head", "verdict"]
ExplainMode = Literal["natural", "decision"]
BLOCKED_NGRAM_SIZE = 6  # no 6-gram of generated tokens twice: a loop is blocked, a repeated short phrase is not


def predict(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    inputs: Sequence[str | Messages | Mapping[str, Any]],
    *,
    prompt_template: PromptTemplate | None = None,
    verbalizers: Mapping[int, str] | None = None,
    probability_from: ProbabilitySource = "head",
    batch_size: int = 8,
    max_new_tokens: int = 128,
    max_prompt_tokens: int | None = None,
    threshold: float | None = None,
    explain: ExplainMode = "natural",
    blocked_ngram_size: int = BLOCKED_NGRAM_SIZE,
    show_progress: bool = True,
    **generate_kwargs,
) -> list[dict[str, Any]]:
    """Class probabilities and an explanation for each input, from one prefill per prompt.

    Args:
        model: a `LlamaForCLSGen` (or a PEFT model wrapping one). With `probability_from="verdict"`, any causal LM;
            with `max_new_tokens=0`, also a `*ForSequenceClassification` model.
        inputs: prompts as text or chat messages, or rows (mappings) that `prompt_template` renders and fits to its
            token budget (or `max_prompt_tokens`); its verdict format reads the verdicts.
        verbalizers: label id -> verdict word, in place of the template's (default `{0: "No", 1: "Yes"}`).
        probability_from: `"head"` (the classification head) or `"verdict"` (the LM's next-token probabilities of the
            verbalizers after the explanation and the verdict prefix).
        max_new_tokens: explanation budget; 0 gives probabilities only (explanation `""`, verdict -1).
        threshold: binary decision threshold; default the model's `config.cls_threshold` (0.5 if it has none).
        explain: `"natural"` (the paper's: the explanation is generated freely after the prompt, its verdict is the
            LM's own) or `"decision"` (the head decides first; the explanation is generated after the decision's cue,
            `VerdictFormat.cue`, and its closing verdict shows whether its content led back to that decision).
        blocked_ngram_size: an n-gram of the generated tokens may not occur twice (0: no blocking); the prompt's
            text stays free to copy.
        generate_kwargs: passed to `generate` (greedy unless `do_sample=True`; stops at the verdict line unless
            `stop_strings` is given).

    Returns:
        One record per input: `probability` (one per class, calibrated), `label` (decided at `threshold`),
        `explanation`, `verdict` (the label it states, -1 if none: flag the row), `agrees` and `explain` (the mode).
    """
    if not inputs:
        raise ValueError("Nothing to predict: `inputs` is empty.")
    predictor = _BatchPredictor(
        model, tokenizer, verdict_format=_verdict_format(prompt_template, verbalizers),
        probability_from=probability_from, max_new_tokens=max_new_tokens, threshold=threshold,
        generate_kwargs=generate_kwargs, explain=explain, blocked_ngram_size=blocked_ngram_size,
    )
    ids = encode_prompts(tokenizer, inputs, prompt_template, max_prompt_tokens)
    starts = tqdm(range(0, len(ids), batch_size), desc="Predicting", disable=not show_progress, unit="batch")
    return [record for start in starts for record in predictor(ids[start : start + batch_size])]


def predict_by_length(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[list[int]], *,
    prompt_template: PromptTemplate | None = None, batch_size: int = 8, max_batch_tokens: int | None = None,
    max_new_tokens: int = 128, threshold: float | None = None, explain: ExplainMode = "natural",
) -> Iterator[tuple[list[dict[str, Any]], int]]:
    """`predict`'s records for token-id `prompts` in batches of similar length: `batch_size` prompts, or without
    explanations (`max_new_tokens=0`) as many as fit `max_batch_tokens` padded tokens. After each batch, yields the
    records finished since the last, in input order, with the tokens the batch processed (prompt and generated)."""
    batches: list[list[int]] = [[]]
    by_tokens = max_new_tokens == 0 and max_batch_tokens is not None
    for i in sorted(range(len(prompts)), key=lambda i: len(prompts[i])):
        size = len(batches[-1])
        if size and ((size + 1) * len(prompts[i]) > max_batch_tokens if by_tokens else size == batch_size):
            batches.append([])
        batches[-1].append(i)
    predictor = _BatchPredictor(model, tokenizer, verdict_format=prompt_template and prompt_template.verdict_format,
                                max_new_tokens=max_new_tokens, threshold=threshold, explain=explain)
    records, written = [None] * len(prompts), 0
    for batch in batches:
        tokens, start = predictor.tokens, written
        for i, record in zip(batch, predictor([prompts[i] for i in batch])):
            records[i] = record
        while written < len(records) and records[written] is not None:
            written += 1
        yield records[start:written], predictor.tokens - tokens


def tune_and_store_threshold(model: PreTrainedModel, probabilities: ArrayLike, labels: ArrayLike) -> float:
    """Tune the binary decision threshold for F1 on validation rows (`probabilities`: positive-class `(n,)` or
    per-class `(n, 2)`; `labels`: 0/1) and store it as `model.config.cls_threshold`, saved with the model."""
    probs = positive_scores(probabilities)
    if probs.ndim == 2:
        raise ValueError(f"Threshold tuning is for binary models; got {probs.shape[1]} classes.")
    threshold = tune_threshold(probs, labels)
    _unwrap(model).config.cls_threshold = threshold
    return threshold


class _BatchPredictor:
    """Records for one batch of token-id prompts: shared by `predict`, `predict_by_length` and `CLSGenPipeline`."""

    def __init__(
        self, model, tokenizer, *, verdict_format: VerdictFormat | None, max_new_tokens: int, threshold: float | None,
        explain: ExplainMode, probability_from: ProbabilitySource = "head", generate_kwargs: dict | None = None,
        blocked_ngram_size: int = BLOCKED_NGRAM_SIZE,
    ):
        if probability_from not in ("head", "verdict"):
            raise ValueError(f"`probability_from` must be 'head' or 'verdict', got {probability_from!r}.")
        if explain not in ("natural", "decision"):
            raise ValueError(f"`explain` must be 'natural' or 'decision', got {explain!r}.")
        if explain == "decision" and probability_from != "head":
            raise ValueError("`explain='decision'` explains the head's decision: it needs probability_from='head'.")
        if max_new_tokens < 0:
            raise ValueError(f"`max_new_tokens` must be >= 0, got {max_new_tokens}.")
        self.base = _unwrap(model)
        self.clsgen = hasattr(self.base, "classify_and_generate")
        classifier = max_new_tokens == 0 and type(self.base).__name__.endswith("ForSequenceClassification")
        if probability_from == "head" and not (self.clsgen or classifier):
            raise TypeError(f"{type(self.base).__name__} has no classification head; load a CLSGen model "
                            "(LlamaForCLSGen), or use probability_from='verdict' for a plain causal LM.")
        self.tokenizer, self.verdict_format = tokenizer, verdict_format or VerdictFormat()
        self.probability_from, self.max_new_tokens = probability_from, max_new_tokens
        self.threshold = getattr(self.base.config, "cls_threshold", 0.5) if threshold is None else threshold
        self.explain, self.blocked_ngram_size = explain, blocked_ngram_size
        self.tokens = 0  # prompt and generated tokens processed, for throughput
        self.generate_kwargs = {"do_sample": False, "max_new_tokens": max_new_tokens,
                                "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id,
                                "stop_strings": self.verdict_format.stop_strings, "tokenizer": tokenizer,
                                **(generate_kwargs or {})}
        if probability_from == "verdict":
            self.verbalizer_ids = _verbalizer_token_ids(tokenizer, self.verdict_format)

    @torch.no_grad()
    def __call__(self, rows: list[list[int]]) -> list[dict[str, Any]]:
        inputs = self._left_pad(rows)
        self.tokens += int(inputs.attention_mask.sum())
        from_source = self._from_head if self.probability_from == "head" else self._from_verdict
        training = self.base.training
        self.base.eval()  # no dropout (`trainer.train()` leaves the model in train mode); the caller's mode comes back
        try:
            probabilities, explanations = from_source(inputs.input_ids, inputs.attention_mask)
        finally:
            self.base.train(training)
        labels = self._labels(probabilities)
        verdicts = [self.verdict_format.read(explanation) for explanation in explanations]
        # `agrees` is false when the explanation states another label or none: such rows need a human look.
        per_row = zip(probabilities.tolist(), labels, explanations, verdicts)
        return [{"probability": probability, "label": label, "explanation": explanation, "verdict": verdict,
                 "agrees": verdict == label, "explain": self.explain}
                for probability, label, explanation, verdict in per_row]

    def _left_pad(self, rows: list[list[int]]):
        return self.tokenizer.pad({"input_ids": rows}, padding_side="left", return_tensors="pt").to(self.base.device)

    def _generation(self, start: int) -> dict:
        """`generate`'s arguments for explanations whose generated tokens begin at position `start`."""
        kwargs = dict(self.generate_kwargs)
        if self.blocked_ngram_size > 0:
            block = NoRepeatGeneratedNGramLogitsProcessor(self.blocked_ngram_size, start)
            kwargs["logits_processor"] = LogitsProcessorList([*kwargs.get("logits_processor", []), block])
        return kwargs

    def _labels(self, probabilities: torch.Tensor) -> list[int]:
        return head_labels(positive_scores(probabilities.cpu().numpy()), self.threshold).tolist()

    def _from_head(self, input_ids, attention_mask) -> tuple[torch.Tensor, list[str]]:
        if self.max_new_tokens > 0 and self.explain == "decision":
            return self._decide_then_explain(input_ids, attention_mask)
        if self.max_new_tokens > 0:
            out = self.base.classify_and_generate(input_ids, attention_mask=attention_mask,
                                                  **self._generation(input_ids.shape[1]))
            return out.probabilities, self._decode(out.sequences[:, input_ids.shape[1] :])
        if self.clsgen:
            probabilities = self.base(input_ids, attention_mask=attention_mask, logits_to_keep=1).cls_probabilities
        else:  # a sequence classifier: the serving export's holds the part of the map no weight can, `cls_logit_bias`
            logits = self.base(input_ids, attention_mask=attention_mask).logits.float().cpu().numpy()
            probabilities = torch.as_tensor(DecisionRule.from_config(self.base).probabilities(logits))
        return probabilities, [""] * len(input_ids)

    def _decide_then_explain(self, input_ids, attention_mask) -> tuple[torch.Tensor, list[str]]:
        """Prefill the prompts, decide with the head, append each decision's cue and generate from the same cache."""
        prefill = self.base(input_ids, attention_mask=attention_mask, position_ids=_positions(attention_mask),
                            use_cache=True, logits_to_keep=1)
        cues = [self.verdict_format.cue(label) for label in self._labels(prefill.cls_probabilities)]
        cue = self._left_pad(self.tokenizer(cues, add_special_tokens=False)["input_ids"])
        ids, mask = torch.cat([input_ids, cue.input_ids], -1), torch.cat([attention_mask, cue.attention_mask], -1)
        sequences = self.base.generate(input_ids=ids, attention_mask=mask, **{CACHE_FIELD: prefill[CACHE_FIELD]},
                                       **self._generation(ids.shape[1]))
        return prefill.cls_probabilities, self._decode(sequences[:, ids.shape[1] :])

    def _from_verdict(self, input_ids, attention_mask) -> tuple[torch.Tensor, list[str]]:
        """Generate, then score the verbalizers after `<reasoning>\\n<prefix>` from the prompt's cache."""
        prompt_length = input_ids.shape[1]
        if self.max_new_tokens == 0:
            cache = self.base(input_ids, attention_mask=attention_mask, position_ids=_positions(attention_mask),
                              use_cache=True, logits_to_keep=1)[CACHE_FIELD]
            explanations = [""] * len(input_ids)
        else:
            out = self.base.generate(input_ids=input_ids, attention_mask=attention_mask, return_dict_in_generate=True,
                                     **self._generation(prompt_length))
            explanations = self._decode(out.sequences[:, prompt_length:])
            cache = out[CACHE_FIELD]
            extra = cache.get_seq_length() - prompt_length
            if extra > 0:
                cache.crop(-extra)  # back to the prompt alone
        prefix = self.verdict_format.prefix
        reasonings = [self.verdict_format.strip(explanation) for explanation in explanations]
        continuations = [f"{reasoning}\n{prefix}" if reasoning else prefix for reasoning in reasonings]
        tail = self._left_pad(self.tokenizer(continuations, add_special_tokens=False)["input_ids"])
        # Each row's continuation carries on from its own prompt length; the left padding between is masked out.
        position_ids = attention_mask.sum(-1, keepdim=True) + (tail.attention_mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.base(
            input_ids=tail.input_ids, attention_mask=torch.cat([attention_mask, tail.attention_mask], dim=-1),
            position_ids=position_ids, use_cache=True, logits_to_keep=1, **{CACHE_FIELD: cache},
        ).logits[:, -1]  # (B, V)
        scores = logits.float().log_softmax(-1)[:, self.verbalizer_ids]  # (B, num_labels)
        return scores.softmax(-1), explanations

    def _decode(self, new_tokens: torch.Tensor) -> list[str]:
        self.tokens += int(new_tokens.ne(self.tokenizer.pad_token_id).sum())  # a finished row is padded
        return [text.strip() for text in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


class NoRepeatGeneratedNGramLogitsProcessor(LogitsProcessor):
    """Bans every token that would repeat an `ngram_size`-gram of the tokens generated from position `start` on.

    Unlike `no_repeat_ngram_size` (which counts the prompt too) or `repetition_penalty`, text copied from the prompt
    stays free: explanations quote their input, but a generation going round in a loop is cut off.
    """

    def __init__(self, ngram_size: int, start: int):
        if ngram_size < 1:
            raise ValueError(f"`ngram_size` must be >= 1, got {ngram_size}.")
        self.ngram_size, self.start = ngram_size, start

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        n = self.ngram_size
        for row, tokens in enumerate(input_ids[:, self.start :].tolist()):
            if len(tokens) < n - 1:
                continue
            context = tokens[len(tokens) - n + 1 :] if n > 1 else []
            banned = {tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tokens[i : i + n - 1] == context}
            if banned:
                scores[row, list(banned)] = -float("inf")
        return scores


def _positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids of a left-padded batch counted from each row's first token, as `generate` counts them: a prefill
    outside `generate` must match them, or a row's probability depends on the padding its batch gives it."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def _verbalizer_token_ids(tokenizer, verdict_format: VerdictFormat) -> list[int]:
    """The first token of each label's verbalizer as it follows the prefix (`"Answer: Yes"`), in label order."""
    prefix_ids = tokenizer(verdict_format.prefix, add_special_tokens=False)["input_ids"]
    ids = []
    for label in sorted(verdict_format.verbalizers):
        line = tokenizer(verdict_format.line(label), add_special_tokens=False)["input_ids"]
        if line[: len(prefix_ids)] == prefix_ids and len(line) > len(prefix_ids):
            ids.append(line[len(prefix_ids)])
        else:  # the prefix merges with the word: fall back to the word alone
            ids.append(tokenizer(f" {verdict_format.verbalizers[label]}", add_special_tokens=False)["input_ids"][0])
    if len(set(ids)) != len(ids):
        raise ValueError(f"The verbalizers {verdict_format.verbalizers} share a first token, so their next-token "
                         "probabilities cannot tell them apart; choose verbalizers that start differently.")
    return ids


def _verdict_format(prompt_template, verbalizers: Mapping[int, str] | None) -> VerdictFormat:
    if prompt_template is not None and verbalizers is None:
        return prompt_template.verdict_format
    prefix = prompt_template.verdict_format.prefix if prompt_template is not None else DEFAULT_VERDICT_PREFIX
    return VerdictFormat(dict(verbalizers or DEFAULT_VERBALIZERS), prefix)


def _unwrap(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class CLSGenPipeline(Pipeline):
    """The `clsgen` pipeline: `predict`'s records (and call arguments) for texts, chat messages, or rows (dicts) that
    the model folder's `clsgen_prompt.json` (or a `prompt_template=` argument) turns into prompts.

    ```python
    >>> import clsgen_hf  # registers the task
    >>> from transformers import pipeline
    >>> classifier = pipeline("clsgen", model="outputs/clsgen-smollm2-clinifact")  # doctest: +SKIP
    >>> classifier({"claim": "...", "article_title": "...", "article_abstract": "..."})  # doctest: +SKIP
    {'probability': [0.81, 0.19], 'label': 0, 'explanation': '... Answer: No', 'verdict': 0, 'agrees': True}
    ```
    """

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False

    def __init__(self, model, tokenizer=None, **kwargs):
        if tokenizer.pad_token is None or tokenizer.padding_side != "left":
            tokenizer = prepare_tokenizer(copy.deepcopy(tokenizer), model.config.eos_token_id)
        kwargs.setdefault("prompt_template", PromptTemplate.in_folder(getattr(model, "name_or_path", None)))
        super().__init__(model, tokenizer, **kwargs)
        base = _unwrap(self.model)
        if getattr(base, "_hf_peft_config_loaded", False):  # `pipeline(model=<adapter folder>)`: the folder is lost
            logger.warning("The pipeline's model is an adapter that transformers loaded onto its base, keeping no "
                           "path to the adapter's folder: its decision rule (%s) and prompt template are not read, so "
                           "the head decides uncalibrated at 0.5. Load the folder with `clsgen_hf.load_model` and "
                           "pass the model.", RULE_FILE)
        head = self._forward_params.get("probability_from", "head") == "head"
        if head and not hasattr(base, "classify_and_generate"):
            raise TypeError(f"{type(base).__name__} is not a CLSGen model (no classification head); load one saved by "
                            "`clsgen-hf train` or `CLSGenTrainer`.")

    def _sanitize_parameters(
        self, prompt_template=None, verbalizers=None, max_new_tokens=None, max_prompt_tokens=None, threshold=None,
        probability_from=None, explain=None, **generate_kwargs,
    ):
        preprocess = {"prompt_template": prompt_template, "max_prompt_tokens": max_prompt_tokens}
        forward = {"max_new_tokens": max_new_tokens, "threshold": threshold, "probability_from": probability_from,
                   "explain": explain, "generate_kwargs": generate_kwargs or None}
        if prompt_template is not None or verbalizers is not None:
            forward["verdict_format"] = _verdict_format(prompt_template, verbalizers)
        given = [{name: value for name, value in d.items() if value is not None} for d in (preprocess, forward)]
        return *given, {}

    def preprocess(self, item, prompt_template=None, max_prompt_tokens=None):
        return {"prompt_ids": encode_prompts(self.tokenizer, [item], prompt_template, max_prompt_tokens)[0]}

    def _forward(self, model_inputs, verdict_format=None, max_new_tokens=128, threshold=None, probability_from="head",
                 explain="natural", generate_kwargs=None):
        rows = model_inputs["prompt_ids"]
        if rows and isinstance(rows[0], int):  # a single prompt (no batching)
            rows = [rows]
        predictor = _BatchPredictor(
            self.model, self.tokenizer, verdict_format=verdict_format, probability_from=probability_from,
            max_new_tokens=max_new_tokens, threshold=threshold, generate_kwargs=generate_kwargs, explain=explain,
        )
        return {"records": predictor(rows)}

    def postprocess(self, model_outputs):
        records = model_outputs["records"]
        return records[0] if isinstance(records, list) else records


# `import clsgen_hf` imports this module: `pipeline("clsgen", ...)` works from then on.
PIPELINE_REGISTRY.register_pipeline("clsgen", pipeline_class=CLSGenPipeline, pt_model=AutoModelForCausalLM)


__all__ = ["CLSGenPipeline", "NoRepeatGeneratedNGramLogitsProcessor", "predict", "predict_by_length",
           "tune_and_store_threshold"]
