"""The five methods of the CliniFact benchmark, each trained (where it trains) on the same rows, base model, budget
and seed, and returning raw (uncalibrated) class probabilities for every validation and test row and, for a method
that writes one, the explanation of each explained test row. Also the language-retention measure every method with
a language model is scored on."""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate.utils import is_peft_model
from datasets import Dataset
from peft import get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
)
from trl import ModelConfig, SFTConfig, SFTTrainer, get_peft_config

from clsgen_hf import CLSGenConfig, DataCollatorForCLSGen, load_model, load_model_and_tokenizer, predict
from clsgen_hf.data import DEFAULT_DECISION_SHARE, TransformersTeacher, with_decision_cues
from clsgen_hf.errors import UsageError
from clsgen_hf.prompt_template import PromptTemplate, encode_example, encode_prompts
from clsgen_hf.training import train_clsgen

from .stats import calibrate


GENERAL_INSTRUCTIONS = [
    "Explain in two sentences why the sky is blue.",
    "Give three tips for staying focused while studying.",
    "Write a short, friendly email inviting a colleague to lunch on Friday.",
    "What is the difference between a virus and a bacterium?",
    "Summarize the plot of Romeo and Juliet in three sentences.",
    "How do I make a simple tomato sauce for pasta?",
    "Explain what a list comprehension is in Python, with an example.",
    "Describe the water cycle to a ten-year-old.",
]
"""General requests whose answers by the base model (written before any training) measure language retention."""

# The training budget every trained method shares, read from the one `CLSGenConfig` of the run.
BUDGET_FIELDS = (
    "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "learning_rate",
    "lr_scheduler_type", "warmup_steps", "weight_decay", "max_grad_norm", "optim", "seed", "bf16", "fp16", "use_cpu",
    "activation_checkpointing", "logging_steps", "report_to", "save_strategy",
)


@dataclass
class MethodResult:
    """What one method produced, before any calibration: raw class probabilities of every validation and test row,
    and (for a method that writes one) the explanation of each explained test row."""

    validation: list[list[float]]
    test: list[list[float]]
    explanations: list[str] | None
    train_seconds: float
    predict_seconds: float
    lm_perplexity: float | None


@dataclass
class Bench:
    """Everything the methods share: the rows, the base model, the budget. `explained` holds the positions (in
    `test`) of the rows whose explanations are generated and scored, `disjoint` those whose abstract no training row
    has."""

    training_args: CLSGenConfig
    model_args: ModelConfig
    output_dir: Path
    base: str
    tokenizer: PreTrainedTokenizerBase
    template: PromptTemplate
    train: Dataset
    validation: Dataset
    test: Dataset
    explained: list[int]
    disjoint: list[int]
    reference: dict
    device: torch.device
    predict_batch_size: int
    max_new_tokens: int

    @property
    def budget(self) -> dict:
        return {name: getattr(self.training_args, name) for name in BUDGET_FIELDS}

    def run_dir(self, method: str) -> str:
        return str(self.output_dir / f"{method}-seed{self.training_args.seed}")

    def load(self, model_class: type, **kwargs) -> PreTrainedModel:
        return model_class.from_pretrained(self.base, **kwargs).to(self.device).eval()

    def predict(self, model: PreTrainedModel, rows: Dataset, **kwargs) -> list[dict]:
        kwargs = {"batch_size": self.predict_batch_size, "max_new_tokens": self.max_new_tokens, **kwargs}
        return predict(model, self.tokenizer, rows["prompt"], prompt_template=self.template, **kwargs)

    def probabilities(self, model: PreTrainedModel, rows: Dataset, **kwargs) -> list[list[float]]:
        return [record["probability"] for record in self.predict(model, rows, max_new_tokens=0, **kwargs)]

    def explain(self, model: PreTrainedModel, **kwargs) -> list[str]:
        """Explanations of the explained test rows."""
        return [record["explanation"] for record in self.predict(model, self.test.select(self.explained), **kwargs)]

    def verdict_result(self, model: PreTrainedModel, train_seconds: float) -> MethodResult:
        """An LM's probability of each verdict word right after the prompt and the verdict prefix (every row), and
        its explanation (reasoning + verdict) of the explained rows, generated separately: the probability does not
        restate the explanation's verdict, so alignment measures something."""
        model.eval()
        validation = self.probabilities(model, self.validation, probability_from="verdict")
        started = time.time()
        test = self.probabilities(model, self.test, probability_from="verdict")
        explanations = self.explain(model, probability_from="verdict")
        return MethodResult(validation, test, explanations, train_seconds, time.time() - started,
                            perplexity(model, self.tokenizer, self.reference))

    def head_test(self, model: PreTrainedModel, **kwargs) -> tuple[list[list[float]], list[str]]:
        """A CLSGen model's head probability of every test row and explanation of the explained rows, from one
        prefill per row (`predict` reads the head and generates from the same cache)."""
        explained = set(self.explained)
        rest = [i for i in range(len(self.test)) if i not in explained]
        with_text = self.predict(model, self.test.select(self.explained), **kwargs)
        probabilities = dict(zip(self.explained, (record["probability"] for record in with_text)))
        probabilities.update(zip(rest, self.probabilities(model, self.test.select(rest)) if rest else []))
        return [probabilities[i] for i in range(len(self.test))], [record["explanation"] for record in with_text]


def run_prompting(bench: Bench, base_lm: PreTrainedModel) -> MethodResult:
    return bench.verdict_result(base_lm, 0.0)


def run_discriminative(bench: Bench, base_lm: PreTrainedModel) -> MethodResult:
    model = bench.load(AutoModelForSequenceClassification, num_labels=2)
    model.config.pad_token_id = bench.tokenizer.pad_token_id
    peft_config = get_peft_config(bench.model_args)
    if peft_config is not None:
        peft_config.task_type = "SEQ_CLS"  # PEFT then trains and saves `score` fully, next to the adapters
        model = get_peft_model(model, peft_config)
    ids = encode_prompts(bench.tokenizer, bench.train["prompt"])
    trainer = Trainer(
        model=model,
        args=TrainingArguments(bench.run_dir("discriminative"), **bench.budget),
        train_dataset=Dataset.from_dict({"input_ids": ids, "labels": bench.train["label"]}),
        data_collator=DataCollatorWithPadding(bench.tokenizer),
    )
    started = time.time()
    trainer.train()
    train_seconds = time.time() - started
    classifier = _merged(trainer.model)
    validation = bench.probabilities(classifier, bench.validation)
    started = time.time()
    test = bench.probabilities(classifier, bench.test)
    # The tuned backbone under the base model's own lm_head, asked for an explanation and verdict.
    lm = copy.deepcopy(base_lm)
    lm.model.load_state_dict(classifier.model.state_dict())
    explanations = bench.explain(lm, probability_from="verdict")
    return MethodResult(validation, test, explanations, train_seconds, time.time() - started,
                        perplexity(lm, bench.tokenizer, bench.reference))


def run_sft(bench: Bench, base_lm: PreTrainedModel) -> MethodResult:
    trainer = SFTTrainer(
        bench.load(AutoModelForCausalLM),
        args=SFTConfig(bench.run_dir("sft"), max_length=bench.training_args.max_length, **bench.budget),
        train_dataset=bench.train.select_columns(["prompt", "completion"]),
        processing_class=bench.tokenizer,
        peft_config=get_peft_config(bench.model_args),
    )
    started = time.time()
    trainer.train()
    return bench.verdict_result(_merged(trainer.model), time.time() - started)


def run_tfidf(bench: Bench, base_lm: PreTrainedModel) -> MethodResult:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    def texts(rows: Dataset) -> list[str]:  # the user message: the same (fitted) text the LLMs read
        return [prompt[-1]["content"] for prompt in rows["prompt"]]

    classifier = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        LogisticRegression(max_iter=1000, random_state=bench.training_args.seed),
    )
    started = time.time()
    classifier.fit(texts(bench.train), bench.train["label"])
    train_seconds = time.time() - started
    validation = classifier.predict_proba(texts(bench.validation)).tolist()
    started = time.time()
    test = classifier.predict_proba(texts(bench.test)).tolist()
    return MethodResult(validation, test, None, train_seconds, time.time() - started, None)


def run_clsgen(bench: Bench, base_lm: PreTrainedModel) -> MethodResult:
    """The library's recipe (`clsgen_hf.training.train_clsgen`), then the saved model as users load it. The recipe's
    decision rule (`fit_decision_rule`) is the benchmark's own `calibrate` on the head's validation probabilities,
    which the benchmark applies to every method alike; so the model is saved without one and read raw here."""
    training_args = copy.copy(bench.training_args)
    training_args.output_dir = bench.run_dir("clsgen")
    rows = with_decision_cues(bench.train, bench.template.verdict_format, DEFAULT_DECISION_SHARE,
                              seed=training_args.seed)  # as the recipe trains, for both explanation modes
    _, train_seconds, _ = train_clsgen(load_model(bench.base), bench.tokenizer, rows, bench.template,
                                       training_args, get_peft_config(bench.model_args))
    model, tokenizer = load_model_and_tokenizer(training_args.output_dir)
    model.to(bench.device).eval()
    validation = bench.probabilities(model, bench.validation)
    started = time.time()
    test, explanations = bench.head_test(model)
    return MethodResult(validation, test, explanations, train_seconds, time.time() - started,
                        perplexity(model, tokenizer, bench.reference))


def run_clsgen_decision(bench: Bench, base_lm: PreTrainedModel) -> MethodResult:
    """The model `run_clsgen` saved, explaining in decision mode: the head decides at the rule the benchmark fits
    for it (`calibrate`, as for every method), and the explanation follows that decision."""
    folder = Path(bench.run_dir("clsgen"))
    if not (folder / "config.json").is_file():
        raise UsageError("The method clsgen_decision explains the model that the clsgen method trains: run both.")
    model, tokenizer = load_model_and_tokenizer(folder)
    model.to(bench.device).eval()
    validation = bench.probabilities(model, bench.validation)
    calibration, threshold = calibrate(validation, bench.validation["label"])
    # The model is saved raw: the calibrated threshold as a threshold on the raw head's P(positive) (the map is
    # monotone), so that `predict` decides, and the explanation follows, exactly as the scored label does.
    raw_threshold = float(calibration.uncalibrated([[1 - threshold, threshold]])[0, 1])
    started = time.time()
    test, explanations = bench.head_test(model, explain="decision", threshold=raw_threshold)
    return MethodResult(validation, test, explanations, 0.0, time.time() - started,
                        perplexity(model, tokenizer, bench.reference))


RUNNERS = {
    "prompting": run_prompting,
    "discriminative": run_discriminative,
    "sft": run_sft,
    "tfidf": run_tfidf,
    "clsgen": run_clsgen,
    "clsgen_decision": run_clsgen_decision,
}


def language_reference(base_lm: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, output_dir: Path,
                       max_new_tokens: int, source: str) -> dict:
    """The base model's answers to `GENERAL_INSTRUCTIONS`, written before any training and cached."""
    path = output_dir / "language_reference.json"
    settings = {"model": source, "max_new_tokens": max_new_tokens, "instructions": GENERAL_INSTRUCTIONS}
    if path.is_file():
        cached = json.loads(path.read_text(encoding="utf-8"))
        if {key: cached.get(key) for key in settings} == settings:
            return cached
    teacher = TransformersTeacher(model=base_lm, tokenizer=tokenizer, name="base")
    answers = teacher.generate([[{"role": "user", "content": q}] for q in GENERAL_INSTRUCTIONS],
                               max_new_tokens=max_new_tokens)
    reference = {**settings, "answers": answers}
    path.write_text(json.dumps(reference, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return reference


@torch.no_grad()
def perplexity(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, reference: dict) -> float:
    """Perplexity of `model`'s language-model head on the reference answers (answer tokens only)."""
    examples = [encode_example(tokenizer, instruction, answer, None)
                for instruction, answer in zip(reference["instructions"], reference["answers"])]
    batch = DataCollatorForCLSGen(tokenizer.pad_token_id)(  # right-padded ids, mask and labels (-100 off the answer)
        [{"input_ids": e.input_ids, "labels": e.labels, "cls_positions": e.cls_position, "cls_labels": 0}
         for e in examples])
    model.eval()
    out = model(**{key: batch[key].to(model.device) for key in ("input_ids", "attention_mask", "labels")})
    loss = out.lm_loss if getattr(out, "lm_loss", None) is not None else out.loss
    return float(torch.exp(loss.float()))


def _merged(model):
    return (model.merge_and_unload() if is_peft_model(model) else model).eval()
