"""`CLSGenTrainer`: TRL's `SFTTrainer` training both heads of a `LlamaForCLSGen` from one backbone pass.

The datasets are prepared by `prepare_clsgen_dataset` (each row keeps its class label and last prompt token), and
`compute_loss` replaces TRL's fused LM-head path, which leaves no hidden state to classify.
"""

from __future__ import annotations

import copy
import itertools
import logging
import os
from collections import defaultdict
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import send_to_device
from datasets import Dataset
from peft import PeftModel, get_peft_model
from transformers import EvalPrediction
from trl import SFTTrainer

from .atomic import atomic_files, atomic_path
from .calibration import DecisionRule
from .clsgen_config import CLSGenConfig
from .clsgen_data import DataCollatorForCLSGen, prepare_clsgen_dataset
from .errors import UsageError
from .evaluation import evaluate_predictions
from .loading import load_model
from .model_card import CLSGenCardData, ModelCardCallback


logger = logging.getLogger(__name__)

STEP_WEIGHT = "cls_weight_total"  # the batch key of the class weight of the batch's whole optimizer step


def class_head_metrics(eval_pred: EvalPrediction, rule: DecisionRule | None = None) -> dict[str, float]:
    """AUROC, F1 and log-loss of the classification head on the eval set, scored as the recipe scores test rows: at
    the model's decision rule (calibrated probabilities, F1 at its threshold). Once a rule is stored, `raw_f1` and
    `raw_log_loss` score the head before it (F1 at 0.5)."""
    rule, labels = rule or DecisionRule(), np.asarray(eval_pred.label_ids)
    logits = np.asarray(eval_pred.predictions, dtype=float)
    results = evaluate_predictions([{"probability": row} for row in rule.probabilities(logits)], labels,
                                   threshold=rule.cls_threshold)
    metrics = {key: results[key] for key in ("auroc", "f1", "log_loss")}
    if results["threshold"] is not None:
        metrics["threshold"] = results["threshold"]
    if rule.calibration.method != "none" or rule.cls_threshold != DecisionRule.cls_threshold:
        raw = evaluate_predictions([{"probability": row} for row in DecisionRule().probabilities(logits)], labels)
        metrics.update(raw_f1=raw["f1"], raw_log_loss=raw["log_loss"])
    return metrics


class _StepWeightedLoader:
    """A training dataloader whose batches also carry `STEP_WEIGHT`: the class weight of all the rows of their
    optimizer step (`steps` batches, grouped from the start as `Trainer` groups them for gradient accumulation), so
    that `compute_loss` normalises the class loss over the step as `num_items_in_batch` normalises the LM loss."""

    def __init__(self, dataloader, steps: int, row_weights: Callable[[torch.Tensor], torch.Tensor]):
        self.dataloader, self.steps, self.row_weights = dataloader, steps, row_weights

    def __len__(self) -> int:
        return len(self.dataloader)

    def __getattr__(self, name: str):  # `set_epoch`, `batch_sampler`, `dataset`, ...: the dataloader's own
        if name == "dataloader":
            raise AttributeError(name)
        return getattr(self.dataloader, name)

    def __iter__(self):
        batches, left = iter(self.dataloader), len(self.dataloader)
        while left > 0:  # never reads past a step's last batch, as `Trainer` does not
            step = list(itertools.islice(batches, min(self.steps, left)))
            if not step:
                return
            left -= len(step)
            total = sum((self.row_weights(batch["cls_labels"]).sum() for batch in step), torch.tensor(0.0)).item()
            for batch in step:
                yield {**batch, STEP_WEIGHT: total}  # a float: `Trainer` moves and casts tensors only


class CLSGenTrainer(SFTTrainer):
    """Trainer for CLSGen models: [`~trl.SFTTrainer`] with a classification loss read at the last prompt token.

    Args:
        model: a [`LlamaForCLSGen`] (or a path to one, or to any Llama causal LM: the `score` head is then new).
        train_dataset: rows with `prompt` (chat messages or text), `completion` (the explanation ending in its verdict,
            messages or text) and an integer label column (`args.label_column`).
        eval_dataset: same form; evaluation reports the class head's AUROC, F1 and log-loss.
        processing_class: the tokenizer, ready for the model (see `clsgen_hf.prepare_tokenizer`).
        peft_config: e.g. a `peft.LoraConfig`; `score` is added to its `modules_to_save` so that the head is trained
            fully and saved with the adapter.

    It extends `SFTTrainer` through public, documented hooks only: `prepare_clsgen_dataset` runs on the datasets
    before `SFTTrainer.__init__` sees them (which then skips its own preparation: `dataset_kwargs=
    {"skip_prepare_dataset": True}`, `remove_unused_columns=False`), a data collator (`DataCollatorForCLSGen`),
    `compute_loss` (both losses from one backbone pass), `loss_is_scaled_for_ga`, `get_train_dataloader` and
    `get_resumed_dataloader` (each training batch carries its optimizer step's class weight), `prediction_step` (the
    head's logits for `compute_metrics`), `evaluate` (prepares rows passed to it), `log` (the loss parts),
    `create_optimizer` (the head's learning rate), `save_model`, `create_model_card` and a callback
    (`ModelCardCallback`).

    ```python
    >>> from clsgen_hf import CLSGenConfig, CLSGenTrainer, load_model_and_tokenizer
    >>> from peft import LoraConfig
    >>> model, tokenizer = load_model_and_tokenizer()  # the embedded SmolLM2-135M-Instruct
    >>> trainer = CLSGenTrainer(model, CLSGenConfig("out"), train_dataset=rows, processing_class=tokenizer,
    ...                         peft_config=LoraConfig(r=16, target_modules="all-linear"))  # doctest: +SKIP
    >>> trainer.train()  # doctest: +SKIP
    ```
    """

    _tag_names = ["trl", "clsgen"]
    loss_is_scaled_for_ga = True  # `compute_loss` scales both losses for gradient accumulation itself

    def __init__(self, model, args: CLSGenConfig | None = None, *, peft_config=None, compute_metrics=None, **kwargs):
        if args is None:
            args = CLSGenConfig("clsgen-output")
        elif not isinstance(args, CLSGenConfig):
            raise TypeError(f"`args` must be a CLSGenConfig, got {type(args).__name__}.")
        tokenizer = kwargs.get("processing_class")
        if tokenizer is None:
            raise ValueError("CLSGenTrainer needs `processing_class`: the tokenizer of the model.")
        if isinstance(model, str):  # SFTTrainer would load an AutoModelForCausalLM, without the `score` head
            model = load_model(model, **(args.model_init_kwargs or {}))
        self.num_labels = model.config.num_labels
        if args.class_weights is not None and len(args.class_weights) != self.num_labels:
            raise ValueError(f"`class_weights` has {len(args.class_weights)} values but the model has "
                             f"{self.num_labels} labels.")
        rows = kwargs.get("train_dataset")
        for key, name in (("train_dataset", "train"), ("eval_dataset", "eval")):
            kwargs[key] = self._prepared(kwargs.get(key), tokenizer, args, name)
        # TRL's own preparation would drop rows without an LM target and shuffle again; its signature columns would
        # drop `cls_positions` and `cls_labels`
        args.dataset_kwargs = {**(args.dataset_kwargs or {}), "skip_prepare_dataset": True}
        args.remove_unused_columns = False
        if args.init_head_bias_from_prior and isinstance(rows, Dataset) and args.label_column in rows.column_names:
            _init_head_bias_from_prior(model, rows[args.label_column])  # checked by `prepare_clsgen_dataset`
        if peft_config is not None and "score" not in (peft_config.modules_to_save or []):
            peft_config.modules_to_save = [*(peft_config.modules_to_save or []), "score"]
        if kwargs.get("data_collator") is None:
            kwargs["data_collator"] = DataCollatorForCLSGen(tokenizer.pad_token_id, args.pad_to_multiple_of)
        super().__init__(
            model, args, peft_config=peft_config, compute_metrics=compute_metrics or self._class_head_metrics, **kwargs
        )
        self._class_weights = torch.tensor(args.class_weights or [1.0] * self.num_labels, dtype=torch.float32)
        self._verdict_token_ids = _verdict_token_ids(self.processing_class, model.config.id2label)
        self._loss_logs = {"train": defaultdict(list), "eval": defaultdict(list)}  # means go out with each `log`
        self._train_tokens = 0
        self._check_sharding()
        self.model_card_data = CLSGenCardData(tags=list(self._tag_names))  # filled by the callback as training goes
        self.add_callback(ModelCardCallback(self))

    def _prepared(self, dataset, tokenizer, args: CLSGenConfig, name: str):
        """`prepare_clsgen_dataset` on `dataset`, or on each dataset of a dict (a `str` names a prepared one)."""
        if isinstance(dataset, dict):
            return {key: self._prepared(value, tokenizer, args, key) for key, value in dataset.items()}
        if dataset is None or isinstance(dataset, str):
            return dataset
        return prepare_clsgen_dataset(dataset, tokenizer, args, self.num_labels, name)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """`Trainer.evaluate`, on rows or prepared features alike (rows are prepared as `__init__` prepares them)."""
        eval_dataset = self._prepared(eval_dataset, self.processing_class, self.args, "eval")
        return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)

    def get_train_dataloader(self):
        """`Trainer`'s training dataloader, each batch carrying its optimizer step's class weight (`STEP_WEIGHT`)."""
        return _StepWeightedLoader(super().get_train_dataloader(), self.args.gradient_accumulation_steps,
                                   self._row_weights)

    def get_resumed_dataloader(self, dataloader, num_batches: int):
        """Skip whole optimizer steps of the plain dataloader, then weigh the steps left as `get_train_dataloader`
        does."""
        return _StepWeightedLoader(super().get_resumed_dataloader(dataloader.dataloader, num_batches),
                                   dataloader.steps, dataloader.row_weights)

    def _class_head_metrics(self, eval_pred: EvalPrediction) -> dict[str, float]:
        """`class_head_metrics` at the rule the model holds now (fitted after training: read at each evaluation)."""
        return class_head_metrics(eval_pred, DecisionRule.from_config(self.accelerator.unwrap_model(self.model)))

    def _check_sharding(self) -> None:
        """Refuse the sharded setups that would train `score` other than in float32, or not shard at all."""
        requested = bool(self.args.fsdp) or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
        if requested and not self.is_fsdp_enabled:
            raise UsageError(
                f"FSDP was requested but accelerate runs this job as {self.accelerator.distributed_type.value} (FSDP "
                "shards on GPUs only): on CPU launch with examples/accelerate_configs/cpu_2proc.yaml, or drop `fsdp`."
            )
        if not self.is_fsdp_enabled:
            return
        plugin = self.accelerator.state.fsdp_plugin
        if plugin.fsdp_version != 2:
            raise UsageError(
                "FSDP1 flattens `score` (float32) with the backbone into one FlatParameter of one dtype: set "
                "`fsdp_version: 2` in the accelerate config (examples/accelerate_configs/fsdp2.yaml)."
            )
        policy = plugin.mixed_precision_policy
        if policy is not None and policy.param_dtype not in (None, torch.float32):
            raise UsageError(
                f"FSDP2 with mixed_precision={self.accelerator.mixed_precision!r} computes `score` in that dtype too: "
                "train with `bf16=False` (`mixed_precision: 'no'` in the accelerate config) and load the backbone "
                "with `dtype=torch.bfloat16`; FSDP2 then keeps each parameter's dtype and `score` stays float32."
            )

    def create_optimizer(self, model=None):
        """Trainer's optimizer, with the classification head in groups of its own at `args.head_learning_rate`."""
        optimizer = super().create_optimizer(model)
        if self.args.head_learning_rate is None:
            return optimizer
        head = {id(p) for name, p in (model or self.model).named_parameters() if "score" in name.split(".")}
        for group in list(optimizer.param_groups):
            head_params = [p for p in group["params"] if id(p) in head]
            if head_params:
                group["params"] = [p for p in group["params"] if id(p) not in head]
                optimizer.add_param_group({**group, "params": head_params, "lr": self.args.head_learning_rate})
        return optimizer

    def _row_weights(self, cls_labels: torch.Tensor) -> torch.Tensor:
        return self._class_weights.to(cls_labels.device)[cls_labels]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """`lm_loss_weight * lm_loss + cls_loss_weight * cls_loss` from one backbone pass, both normalised over the
        whole step (tokens: `num_items_in_batch`, rows: their class weight): how a batch is split cannot matter."""
        mode = "train" if self.model.training else "eval"
        cls_labels, step_weight = inputs.pop("cls_labels"), inputs.pop(STEP_WEIGHT, None)
        hidden = {"output_hidden_states": True} if self.args.verdict_loss_weight != 1 else {}
        outputs = model(**inputs, use_cache=False, num_items_in_batch=num_items_in_batch, **hidden)
        row_weights = self._row_weights(cls_labels)
        per_row = torch.nn.functional.cross_entropy(outputs.cls_logits, cls_labels, reduction="none")
        weighted = (row_weights * per_row).sum()
        cls_loss = weighted / row_weights.sum()  # this micro-batch's weighted mean, for the logs
        cls_objective = cls_loss
        if step_weight is not None:  # a training batch: normalise over its whole optimizer step, on every rank
            total, ranks = torch.tensor(step_weight, device=weighted.device), 1
            if self.args.average_tokens_across_devices:  # the weight total spans all ranks, DDP averages gradients
                total, ranks = self.accelerator.gather(total).sum(), self.accelerator.num_processes
            cls_objective = weighted / total * ranks

        gather = self.accelerator.gather_for_metrics
        lm_loss = lm_mean = outputs.lm_loss
        if self.args.verdict_loss_weight != 1:
            extra, verdict_loss = self._extra_verdict_loss(model, outputs, inputs["labels"], num_items_in_batch)
            lm_loss = lm_loss + (self.args.verdict_loss_weight - 1) * extra
            self._loss_logs[mode]["verdict_loss"].append(gather(verdict_loss).mean().item())
        if num_items_in_batch is None:
            lm_loss = lm_loss / (self.current_gradient_accumulation_steps if mode == "train" else 1)
        else:
            lm_mean = lm_loss * num_items_in_batch / (inputs["labels"][:, 1:] != -100).sum().clamp(min=1)
            if self.args.average_tokens_across_devices:  # the token count spans all ranks, DDP averages gradients
                lm_loss = lm_loss * self.accelerator.num_processes
        loss = self.args.lm_loss_weight * lm_loss + self.args.cls_loss_weight * cls_objective

        self._loss_logs[mode]["lm_loss"].append(gather(lm_mean.detach()).mean().item())
        self._loss_logs[mode]["cls_loss"].append(gather(cls_loss.detach()).mean().item())
        if mode == "train":
            self._train_tokens += gather(inputs["attention_mask"].sum()).sum().item()
            self._loss_logs[mode]["num_tokens"] = [self._train_tokens]
        outputs.cls_labels = cls_labels
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Also log the means of the losses `compute_loss` noted since the last log (`eval_` ones in evaluation)."""
        mode = "train" if self.model.training else "eval"
        prefix = "eval_" if mode == "eval" else ""
        logs.update({prefix + key: sum(values) / len(values) for key, values in self._loss_logs[mode].items()})
        self._loss_logs[mode].clear()
        super().log(logs, start_time)

    def _extra_verdict_loss(self, model, outputs, labels: torch.Tensor, num_items_in_batch) -> tuple:
        """The verdict words' summed cross-entropy, normalised as the LM loss is (to add `weight - 1` times of it),
        and its mean over the rows (for the logs)."""
        targets = labels[:, 1:]  # (B, T-1): position t predicts targets[:, t]
        is_verdict = torch.isin(targets, self._verdict_token_ids.to(targets.device))
        steps = torch.arange(targets.shape[1], device=targets.device)
        last = torch.where(is_verdict, steps, -1).max(-1).values  # (B,): each row's last verdict word, -1 if none
        rows = (last >= 0).nonzero().flatten()
        hidden = outputs.hidden_states[-1][rows, last[rows]]  # (R, H)
        lm_head = self.accelerator.unwrap_model(model).get_output_embeddings()
        per_row = torch.nn.functional.cross_entropy(lm_head(hidden).float(), targets[rows, last[rows]],
                                                    reduction="none")
        denominator = num_items_in_batch if num_items_in_batch is not None else (targets != -100).sum().clamp(min=1)
        return per_row.sum() / denominator, per_row.detach().mean() if len(rows) else per_row.detach().sum()

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        """Save the model; with LoRA and `save_merged`, the merged model (checkpoints keep the adapter for resuming).
        The decision rule goes with it (see `_save_rule`), and into the checkpoint that holds the same weights. The
        final model is written in a hidden folder inside `output_dir` and moved in once complete (`atomic_files`): a
        run killed while saving it leaves the previous one, not a half-written folder that looks complete."""
        model = self.accelerator.unwrap_model(self.model)
        output_dir = output_dir or self.args.output_dir
        # DeepSpeed's own checkpoint format is written by every rank, into the folder each names: not staged.
        final = not _internal_call and self.args.should_save and not self.is_deepspeed_enabled
        with atomic_files(output_dir) if final else nullcontext(output_dir) as folder:
            if _internal_call or not self.args.save_merged or not isinstance(model, PeftModel):
                super().save_model(folder, _internal_call)
            else:
                state_dict = self.accelerator.get_state_dict(self.model) if self.is_fsdp_enabled else None  # all ranks
                if self.args.should_save:
                    merged = copy.deepcopy(model) if state_dict is None else _unsharded_copy(model, state_dict)
                    merged.merge_and_unload().save_pretrained(folder)
                    self.processing_class.save_pretrained(folder)
                    logger.info("Saved the merged model to %s", output_dir)
            if not _internal_call and self.args.should_save:
                self._save_rule(model, Path(folder))
        if not _internal_call:  # once the weights are in (PEFT writes a card of its own beside an adapter)
            self.create_model_card(output_dir=output_dir)
        if _internal_call or not self.args.should_save:
            return  # a checkpoint written while training has no fitted rule yet
        checkpoint = self.state.best_model_checkpoint if self.args.load_best_model_at_end else None
        checkpoint = Path(checkpoint or Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}")
        if checkpoint.is_dir() and checkpoint != Path(output_dir):
            self._save_rule(model, checkpoint)

    def _save_rule(self, model, folder: Path) -> None:
        """The rule of `model` into `folder`: beside an adapter as `clsgen_rule.json`, else in its `config.json`."""
        if (folder / "adapter_config.json").is_file():
            DecisionRule.from_config(model).save_pretrained(folder)
        elif (folder / "config.json").is_file():
            model.config.save_pretrained(folder)  # a PEFT model's is its base model's

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None,
                          tags: str | list[str] | None = None, output_dir: str | None = None):
        """Write the CLSGen model card into `output_dir` (TRL looks its card templates up in `trl/templates/` only),
        from `model_card_data` (its `results` and `prompt_template` are set by whoever has them: the card reads nothing
        back from the folder)."""
        if not self.is_world_process_zero():
            return
        card, output_dir = self.model_card_data, Path(output_dir or self.args.output_dir)
        model = self.accelerator.unwrap_model(self.model)
        card.model_name = model_name or (self.args.hub_model_id or output_dir.name).split("/")[-1]
        card.repo_id = self.args.hub_model_id or card.model_name
        card.dataset_name = dataset_name or card.dataset_name
        card.tags = [*([tags] if isinstance(tags, str) else tags or []), *(card.tags or [])]
        card.form = "adapter" if isinstance(model, PeftModel) and not self.args.save_merged else "merged"
        card.config = model.config
        if card.training is not None:
            card.training["global_step"] = self.state.global_step
        with atomic_path(output_dir / "README.md") as temporary:
            card.to_model_card().save(temporary)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Eval: the loss, and the class head's logits against the class labels (for `compute_metrics`)."""
        inputs = send_to_device(inputs, self.args.device)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
        if prediction_loss_only:
            return loss.detach(), None, None
        return loss.detach(), outputs.cls_logits.detach(), outputs.cls_labels


def _unsharded_copy(model: PeftModel, state_dict: dict[str, torch.Tensor]) -> PeftModel:
    """A plain copy of an FSDP2-sharded PEFT model from its full state dict: FSDP modules cannot be deep-copied, and
    merging must not touch the sharded model that training goes on with."""
    base = model.get_base_model()
    with torch.device("meta"):
        copy_ = get_peft_model(type(base)(base.config), copy.deepcopy(model.peft_config[model.active_adapter]))
    missing, unexpected = copy_.load_state_dict(state_dict, strict=False, assign=True)
    tied = set(getattr(base, "all_tied_weights_keys", None) or {})
    missing = [key for key in missing if key.removeprefix("base_model.model.") not in tied]
    if missing or unexpected:
        raise RuntimeError(f"The gathered FSDP state dict does not fit the model: missing {missing}, "
                           f"unexpected {unexpected}.")
    new_base = copy_.get_base_model()
    for name, buffer in base.named_buffers():  # non-persistent buffers (rotary frequencies) are in no state dict
        owner, _, leaf = name.rpartition(".")
        if new_base.get_buffer(name).is_meta:
            new_base.get_submodule(owner).register_buffer(leaf, buffer.detach().cpu(), persistent=False)
    new_base.tie_weights()
    return copy_


def _verdict_token_ids(tokenizer, id2label: dict) -> torch.Tensor:
    """The first token of each label's word as it follows a verdict prefix (`" Yes"`)."""
    return torch.tensor(sorted({tokenizer(f" {word}", add_special_tokens=False)["input_ids"][0]
                                for word in id2label.values()}))


def _init_head_bias_from_prior(model, labels: list[int]) -> None:
    """Start a fresh head (bias exactly zero) at the class log-prior of `labels`, smoothed by one row per class."""
    head = getattr(model, "score", None)
    if head is None or head.bias is None or head.bias.abs().sum() != 0:
        return
    counts = torch.bincount(torch.tensor(labels), minlength=head.out_features)
    with torch.no_grad():
        head.bias.copy_(((counts + 1.0) / (counts.sum() + head.out_features)).log())
    logger.info("Initialised the head's bias at the training class prior %s.", (counts / counts.sum()).tolist())


__all__ = ["CLSGenTrainer", "class_head_metrics"]
