"""The measured workloads of `examples/benchmark_speed.py`: three trainers, three ways to predict, two to synthesize.

Every workload gets the same weights, rows, batch and precision; only the code path differs.
"""

from __future__ import annotations

import json
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import LoraConfig, TaskType, get_peft_model
from transformers import (
    DataCollatorWithPadding,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from trl import SFTConfig, SFTTrainer

from clsgen_hf import CLSGenConfig, CLSGenTrainer, LlamaCLSGenConfig, LlamaForCLSGen, predict
from clsgen_hf.batch_prediction import predict_file
from clsgen_hf.data import TransformersTeacher, default_prompt_template, synthesize_explanations, teacher_messages

from .measure import basis, current_memory_gib, median, now, peak_memory_gib, release_memory, reset_peak_memory, timed


LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # all-linear, lm_head out
WORDS = ("the trial randomised adults with chronic disease to the new drug or placebo and measured the primary "
         "outcome at twelve weeks while secondary outcomes included safety adherence and quality of life").split()
TEMPLATE = default_prompt_template("text")


@dataclass
class ModelSource:
    """Where every workload's weights come from: a saved Llama folder, or a config initialised at random (seeded)."""

    device: torch.device
    dtype: torch.dtype
    folder: str | None = None
    config: dict | None = None

    def load(self, model_class: type[PreTrainedModel], **kwargs) -> PreTrainedModel:
        if self.folder is not None:
            return model_class.from_pretrained(self.folder, dtype=self.dtype, **kwargs).to(self.device)
        config_class = LlamaCLSGenConfig if model_class is LlamaForCLSGen else LlamaConfig
        torch.manual_seed(0)
        with torch.device(self.device):
            return model_class._from_config(config_class(**{**self.config, **kwargs}), dtype=self.dtype)


# ------------------------------------------------------------------------------------------------------ data
def token_rows(vocab_size: int, n: int, prompt_tokens: int, completion_tokens: int, seed: int = 0) -> list[dict]:
    """`n` rows of exactly `prompt_tokens` + `completion_tokens` ids (which ids does not change the work)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        ids = [rng.randrange(3, vocab_size) for _ in range(prompt_tokens + completion_tokens)]
        rows.append({"input_ids": ids, "prompt_tokens": prompt_tokens})
    return rows


def sized_prompts(tokenizer, n: int, prompt_tokens: int, seed: int = 0) -> list[list[dict[str, str]]]:
    """`n` classifier prompts (chat messages of `TEMPLATE`) whose chat-templated length is close to `prompt_tokens`
    without exceeding it."""
    rng = random.Random(seed)
    prompts = []
    for _ in range(n):
        words = rng.choices(WORDS, k=prompt_tokens)
        low, high = 1, len(words)
        while low < high:  # the most words that fit
            middle = (low + high + 1) // 2
            if _length(tokenizer, TEMPLATE.to_messages({"text": " ".join(words[:middle])})) <= prompt_tokens:
                low = middle
            else:
                high = middle - 1
        prompts.append(TEMPLATE.to_messages({"text": " ".join(words[:low])}))
    return prompts


def _length(tokenizer, messages) -> int:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


# -------------------------------------------------------------------------------------------------- training
class StepClock(TrainerCallback):
    """Wall time of each optimizer step, end to end: from one step's end to the next (data loading, collation,
    forward, backward, optimizer, logging), the first step from its beginning."""

    def __init__(self, device: torch.device):
        self.device, self.marks = device, []

    def on_step_begin(self, args, state, control, **kwargs):
        if not self.marks:
            self.marks.append(now(self.device))

    def on_step_end(self, args, state, control, **kwargs):
        self.marks.append(now(self.device))

    def durations(self, clock: str) -> list[float]:
        return [b[clock] - a[clock] for a, b in zip(self.marks, self.marks[1:])]


def _lora(r: int, task_type: TaskType) -> LoraConfig:
    return LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=LORA_TARGETS, task_type=task_type)


def make_trainer(kind: str, source: ModelSource, rows: list[dict], tokenizer, settings: dict[str, Any],
                 lora_r: int, output_dir: Path):
    """`clsgen` (CLSGenTrainer), `sft` (TRL's SFTTrainer, its default loss) or `seqcls` (Trainer +
    LlamaForSequenceClassification + LoRA), all on the same rows (prompt + completion, loss on the completion)."""
    common = dict(output_dir=str(output_dir / kind), save_strategy="no", eval_strategy="no", report_to="none",
                  lr_scheduler_type="constant", learning_rate=1e-4, disable_tqdm=True, seed=0,
                  dataloader_num_workers=0, **settings)
    if kind == "clsgen":
        data = Dataset.from_list([{
            "input_ids": r["input_ids"],
            "labels": [-100] * r["prompt_tokens"] + r["input_ids"][r["prompt_tokens"]:],
            "cls_positions": r["prompt_tokens"] - 1, "cls_labels": i % 2} for i, r in enumerate(rows)])
        args = CLSGenConfig(**common, max_length=len(rows[0]["input_ids"]))
        return CLSGenTrainer(source.load(LlamaForCLSGen), args, train_dataset=data, processing_class=tokenizer,
                             peft_config=_lora(lora_r, TaskType.CAUSAL_LM))
    if kind == "sft":
        data = Dataset.from_list([{
            "input_ids": r["input_ids"],
            "completion_mask": [0] * r["prompt_tokens"] + [1] * (len(r["input_ids"]) - r["prompt_tokens"])}
            for r in rows])
        args = SFTConfig(**common, max_length=len(rows[0]["input_ids"]))
        return SFTTrainer(source.load(LlamaForCausalLM), args, train_dataset=data, processing_class=tokenizer,
                          peft_config=_lora(lora_r, TaskType.CAUSAL_LM))
    if kind == "seqcls":
        model = source.load(LlamaForSequenceClassification, num_labels=2, pad_token_id=tokenizer.pad_token_id)
        model = get_peft_model(model, _lora(lora_r, TaskType.SEQ_CLS))  # SEQ_CLS adds `score` to modules_to_save
        data = Dataset.from_list([{"input_ids": r["input_ids"], "labels": i % 2} for i, r in enumerate(rows)])
        return Trainer(model, TrainingArguments(**common), train_dataset=data,
                       data_collator=DataCollatorWithPadding(tokenizer))
    raise ValueError(f"Unknown trainer {kind!r}.")


def train_speed(kind: str, source: ModelSource, rows: list[dict], tokenizer, settings: dict[str, Any], lora_r: int,
                warmup_steps: int, output_dir: Path) -> dict[str, Any]:
    """Median step time, tokens/s and peak memory of `warmup_steps` + the rest of `rows`' steps."""
    device = source.device
    release_memory(device)
    trainer = make_trainer(kind, source, rows, tokenizer, settings, lora_r, output_dir)
    clock = StepClock(device)
    trainer.add_callback(clock)
    reset_peak_memory(device)
    start_memory = current_memory_gib(device)
    trainer.train()
    peak = peak_memory_gib(device)
    durations = clock.durations(basis(device))
    steps, batch = durations[warmup_steps:], settings["per_device_train_batch_size"]
    step = median(steps)
    result = {"clock": basis(device), "step_seconds": steps, "warmup_seconds": durations[:warmup_steps],
              "median_step_s": step, "median_step_wall_s": median(clock.durations("wall")[warmup_steps:]),
              "tokens_per_s": batch * len(rows[0]["input_ids"]) / step, "peak_memory_gib": peak,
              "start_memory_gib": start_memory,
              "trainable_parameters": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)}
    del trainer
    release_memory(device)
    return result


# ------------------------------------------------------------------------------------------------ prediction
def prediction_speed(source: ModelSource, tokenizer, prompts: list, new_tokens: int, repeats: int) -> dict[str, Any]:
    """`predict` (probability + explanation from one prefill) against plain `generate` of the same prompts and
    token count, and against `generate` followed by a second prefill through a sequence classifier; and a prefill
    alone, which turns generation time into decode time per token."""
    device = source.device
    release_memory(device)
    clsgen, lm = source.load(LlamaForCLSGen).eval(), source.load(LlamaForCausalLM).eval()
    seqcls = source.load(LlamaForSequenceClassification, num_labels=2, pad_token_id=tokenizer.pad_token_id).eval()
    generation = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)

    def encode():
        return tokenizer.apply_chat_template(prompts, add_generation_prompt=True, padding=True, return_tensors="pt",
                                             return_dict=True).to(device)

    def generate(second_forward: bool = False):
        inputs = encode()
        with torch.no_grad():
            out = lm.generate(**inputs, **generation)
            tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
            if second_forward:
                seqcls(**inputs).logits.float().softmax(-1).tolist()
        return out

    def prefill():
        with torch.no_grad():
            lm(**encode(), use_cache=True, logits_to_keep=1)

    variants = {
        "predict": lambda: predict(clsgen, tokenizer, prompts, batch_size=len(prompts), max_new_tokens=new_tokens,
                                   show_progress=False, min_new_tokens=new_tokens),
        "generate": generate,
        "generate_then_forward": lambda: generate(second_forward=True),
        "prefill": prefill,
    }
    new = generate()[:, encode()["input_ids"].shape[1]:]  # warm-up, and a check of the token count
    assert new.shape[1] == new_tokens, new.shape
    times = {name: [] for name in variants}
    for repeat in range(repeats):  # interleaved, the order rotated: no variant always runs first or last
        for name in _rotated(list(variants), repeat):
            times[name].append(timed(variants[name], device))
    result = {f"{name}_s": median([t[basis(device)] for t in values]) for name, values in times.items()}
    result.update({f"{name}_wall_s": median([t["wall"] for t in values]) for name, values in times.items()})
    result["clock"], result["all_seconds"] = basis(device), times
    result["prompt_tokens"] = int(encode()["attention_mask"].sum(-1).float().mean())
    result["batch"], result["new_tokens"] = len(prompts), new_tokens
    for name in ("generate", "predict"):
        result[f"{name}_decode_s_per_token"] = (result[f"{name}_s"] - result["prefill_s"]) / max(new_tokens - 1, 1)
    result["weight_bytes"] = sum(p.numel() * p.element_size() for p in lm.parameters())
    config = lm.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    mean_context = result["prompt_tokens"] + new_tokens / 2
    result["mean_cache_bytes"] = int(len(prompts) * config.num_hidden_layers * 2 * config.num_key_value_heads
                                     * head_dim * mean_context * lm.dtype.itemsize)
    return result


def _rotated(names: list[str], shift: int) -> list[str]:
    shift %= len(names)
    return names[shift:] + names[:shift]


# ------------------------------------------------------------------------------------------- file prediction
def file_prediction_speed(source: ModelSource, tokenizer, rows: int, prompt_tokens: int, new_tokens: int,
                          batch_size: int, output_dir: Path) -> dict[str, Any]:
    """Rows/s of `predict_file` over a JSON Lines file of `rows` rows of shuffled lengths (an eighth to a half of
    `prompt_tokens` words): probabilities only (`max_new_tokens=0`, one forward per row, batched by tokens) and with
    `new_tokens`-token explanations (`batch_size` prompts per batch)."""
    device = source.device
    release_memory(device)
    model = source.load(LlamaForCLSGen).eval()
    rng = random.Random(2)
    path = output_dir / "file_rows.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": " ".join(rng.choices(WORDS, k=rng.randint(prompt_tokens // 8,
                                                                                            prompt_tokens // 2)))})
                            + "\n" for _ in range(rows)))
    result: dict[str, Any] = {"rows": rows, "batch": batch_size, "new_tokens": new_tokens}
    for name, budget in (("probabilities", 0), ("explanations", new_tokens)):
        seconds = timed(lambda name=name, budget=budget: predict_file(
                            model, path, output_dir / f"file_{name}.jsonl", tokenizer=tokenizer,
                            prompt_template=TEMPLATE, batch_size=batch_size, max_new_tokens=budget),
                        device)
        result[f"{name}_rows_per_s"] = rows / seconds[basis(device)]
        result[f"{name}_wall_rows_per_s"] = rows / seconds["wall"]
    result["clock"] = basis(device)
    return result


# ------------------------------------------------------------------------------------------------- synthesis
def synthesis_speed(source: ModelSource, tokenizer, prompts: list, batch_size: int, new_tokens: int,
                    repeats: int) -> dict[str, Any]:
    """Rows/s of `synthesize_explanations` with the local teacher against plain batched `generate` of the same
    teacher conversations (greedy, same budget, no retries or follow-ups: the same tokens to generate)."""
    device = source.device
    release_memory(device)
    lm = source.load(LlamaForCausalLM).eval()
    teacher = TransformersTeacher(model=lm, tokenizer=tokenizer, name="speed-benchmark")
    labels = [i % 2 for i in range(len(prompts))]
    dataset = Dataset.from_dict({"prompt": prompts, "label": labels})
    conversations = [teacher_messages(p, label, TEMPLATE.verdict_format) for p, label in zip(prompts, labels)]

    def synthesize():
        with tempfile.TemporaryDirectory() as folder:  # an empty cache: every answer is generated
            synthesize_explanations(dataset, teacher, prompt_template=TEMPLATE, cache_path=Path(folder) / "c.jsonl",
                                    max_retries=0, batch_size=batch_size, max_new_tokens=new_tokens,
                                    verdict_follow_up=False, require_every_class=False, show_progress=False)

    def generate():
        with torch.inference_mode():
            for start in range(0, len(conversations), batch_size):
                inputs = tokenizer.apply_chat_template(conversations[start:start + batch_size],
                                                       add_generation_prompt=True, padding=True, return_tensors="pt",
                                                       return_dict=True).to(device)
                out = lm.generate(**inputs, max_new_tokens=new_tokens, do_sample=False,
                                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
                tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    generate()  # warm-up
    times = {"synthesize": [], "generate": []}
    for repeat in range(repeats):
        for name in _rotated(list(times), repeat):
            times[name].append(timed(synthesize if name == "synthesize" else generate, device))
    result = {f"{name}_rows_per_s": len(prompts) / median([t[basis(device)] for t in values])
              for name, values in times.items()}
    result.update({f"{name}_wall_rows_per_s": len(prompts) / median([t["wall"] for t in values])
                   for name, values in times.items()})
    result.update(clock=basis(device), all_seconds=times, rows=len(prompts), batch=batch_size, new_tokens=new_tokens)
    return result


__all__ = ["ModelSource", "file_prediction_speed", "make_trainer", "prediction_speed", "sized_prompts",
           "synthesis_speed", "token_rows", "train_speed"]
