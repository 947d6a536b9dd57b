"""The five methods of the CliniFact benchmark, each trained (where it trains) on the same rows, base model and
budget, and returning `predict`-style records: `probability` (one per class) and, for a method that writes one,
`explanation`. Also the language-retention measure every method with a language model is scored on."""

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
    """What one method produced on the validation and test rows (records as `predict` returns them)."""

    validation: list[dict]
    test: list[dict]
    train_seconds: float
    predict_seconds: float
    lm_perplexity: float | None

    @property
    def explanations(self) -> list[str] | None:
        """The test rows' explanations; `None` for a method that writes none."""
        texts = [record.get("explanation") for record in self.test]
        return None if None in texts else texts


@dataclass
class Bench:
    """Everything the methods share: the rows, the base model, the budget."""

    training_args: CLSGenConfig
    model_args: ModelConfig
    output_dir: Path
    base: str
    tokenizer: PreTrainedTokenizerBase
    template: PromptTemplate
    train: Dataset
    validation: Dataset
    test: Dataset
    reference: dict
    device: torch.device
    predict_batch_size: int
    max_new_tokens: int

    @property
    def budget(self) -> dict:
        return {name: getattr(self.training_args, name) for name in BUDGET_FIELDS}

    def load(self, model_class: type, **kwargs) -> PreTrainedModel:
        return model_class.from_pretrained(self.base, **kwargs).to(self.device).eval()

    def predict(self, model: PreTrainedModel, rows: Dataset, **kwargs) -> list[dict]:
        kwargs = {"batch_size": self.predict_batch_size, "max_new_tokens": self.max_new_tokens, **kwargs}
        return predict(model, self.tokenizer, rows["prompt"], prompt_template=self.template, show_progress=False,
                       **kwargs)

    def verdict_predictions(self, model: PreTrainedModel, train_seconds: float) -> MethodResult:
        """An LM asked for reasoning + verdict, its probability read after the verdict prefix."""
        model.eval()
        validation = self.predict(model, self.validation, probability_from="verdict")
        started = time.time()
        test = self.predict(model, self.test, probability_from="verdict")
        return MethodResult(validation, test, train_seconds, time.time() - started,
                            perplexity(model, self.tokenizer, self.reference))


def run_prompting(bench: Bench, base_lm: PreTrainedModel) -> MethodResult:
    return bench.verdict_predictions(base_lm, 0.0)


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
        args=TrainingArguments(str(bench.output_dir / "discriminative"), **bench.budget),
        train_dataset=Dataset.from_dict({"input_ids": ids, "labels": bench.train["label"]}),
        data_collator=DataCollatorWithPadding(bench.tokenizer),
    )
    started = time.time()
    trainer.train()
    train_seconds = time.time() - started
    classifier = _merged(trainer.model)
    validation = bench.predict(classifier, bench.validation, max_new_tokens=0)
    started = time.time()
    test = bench.predict(classifier, bench.test, max_new_tokens=0)
    # The tuned backbone under the base model's own lm_head, asked for an explanation and verdict.
    lm = copy.deepcopy(base_lm)
    lm.model.load_state_dict(classifier.model.state_dict())
    explained = bench.predict(lm, bench.test, probability_from="verdict")
    predict_seconds = time.time() - started
    test = [{"probability": head["probability"], "explanation": text["explanation"]}
            for head, text in zip(test, explained)]
    return MethodResult(validation, test, train_seconds, predict_seconds,
                        perplexity(lm, bench.tokenizer, bench.reference))


def run_sft(bench: Bench, base_lm: PreTrainedModel) -> MethodResult:
    trainer = SFTTrainer(
        bench.load(AutoModelForCausalLM),
        args=SFTConfig(str(bench.output_dir / "sft"), max_length=bench.training_args.max_length, **bench.budget),
        train_dataset=bench.train.select_columns(["prompt", "completion"]),
        processing_class=bench.tokenizer,
        peft_config=get_peft_config(bench.model_args),
    )
    started = time.time()
    trainer.train()
    return bench.verdict_predictions(_merged(trainer.model), time.time() - started)


def run_tfidf(bench: Bench, base_lm: PreTrainedModel) -> MethodResult:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    def texts(rows: Dataset) -> list[str]:  # the user message: the same (fitted) text the LLMs read
        return [prompt[-1]["content"] for prompt in rows["prompt"]]

    def records(rows: Dataset) -> list[dict]:
        return [{"probability": row} for row in classifier.predict_proba(texts(rows)).tolist()]

    classifier = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LogisticRegression(max_iter=1000)
    )
    started = time.time()
    classifier.fit(texts(bench.train), bench.train["label"])
    train_seconds = time.time() - started
    validation = records(bench.validation)
    started = time.time()
    test = records(bench.test)
    return MethodResult(validation, test, train_seconds, time.time() - started, None)


def run_clsgen(bench: Bench, base_lm: PreTrainedModel) -> MethodResult:
    """The library's recipe (`clsgen_hf.training.train_clsgen`), then the saved model as users load it."""
    training_args = copy.copy(bench.training_args)
    training_args.output_dir = str(bench.output_dir / "clsgen")
    model = load_model(bench.base)
    # Calibration and threshold come from the head alone on the validation rows and are saved with the model.
    rows = with_decision_cues(bench.train, bench.template.verdict_format, DEFAULT_DECISION_SHARE,
                              seed=training_args.seed)  # as the recipe trains, for both explanation modes
    _, train_seconds, _ = train_clsgen(model, bench.tokenizer, rows, bench.template, training_args,
                                       get_peft_config(bench.model_args), validation=bench.validation,
                                       batch_size=bench.predict_batch_size)
    del model
    model, tokenizer = load_model_and_tokenizer(training_args.output_dir)
    model.to(bench.device).eval()
    validation = bench.predict(model, bench.validation, max_new_tokens=0)
    started = time.time()
    test = bench.predict(model, bench.test)
    predict_seconds = time.time() - started
    return MethodResult(validation, test, train_seconds, predict_seconds, perplexity(model, tokenizer, bench.reference))


def run_clsgen_decision(bench: Bench, base_lm: PreTrainedModel) -> MethodResult:
    """The model `run_clsgen` saved, explaining in decision mode: the head decides, the explanation follows."""
    folder = bench.output_dir / "clsgen"
    if not (folder / "config.json").is_file():
        raise UsageError("The method clsgen_decision explains the model that the clsgen method trains: run both.")
    model, tokenizer = load_model_and_tokenizer(folder)
    model.to(bench.device).eval()
    validation = bench.predict(model, bench.validation, max_new_tokens=0)
    started = time.time()
    test = bench.predict(model, bench.test, explain="decision")
    return MethodResult(validation, test, 0.0, time.time() - started, perplexity(model, tokenizer, bench.reference))


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
