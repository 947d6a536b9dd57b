# /// script
# requires-python = ">=3.11"
# dependencies = ["clsgen_hf"]
# ///
"""A few FSDP2 training steps of CLSGen on GPUs: prints peak memory and the head's dtype, saves, reloads, compares.

Run by `examples/gpu/check_fsdp2.sh` under `accelerate launch --config_file examples/accelerate_configs/fsdp2.yaml`.
Prints one `CHECK ...` line per rank and `CHECK OK` on rank 0 when the head trained in float32 as a sharded
parameter and the saved folder reloads with the same float32 head.

    accelerate launch --config_file examples/accelerate_configs/fsdp2.yaml --num_processes 1 \\
        examples/gpu/check_fsdp2.py --output_dir outputs/check-fsdp2
    python -m torch.distributed.run --nproc_per_node 2 examples/gpu/check_fsdp2.py --output_dir /tmp/x --tiny \\
        --fsdp_on_cpu   # the CPU rehearsal (tests/test_distributed.py): accelerate's FSDP2 over gloo
"""

import argparse
import os
import resource
import sys

import torch


FSDP2_ENV = {  # what `accelerate launch --config_file examples/accelerate_configs/fsdp2.yaml` exports
    "ACCELERATE_USE_FSDP": "true",
    "FSDP_VERSION": "2",
    "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
    "FSDP_RESHARD_AFTER_FORWARD": "true",
    "FSDP_STATE_DICT_TYPE": "SHARDED_STATE_DICT",
    "FSDP_CPU_RAM_EFFICIENT_LOADING": "true",
    "FSDP_OFFLOAD_PARAMS": "false",
    "ACCELERATE_MIXED_PRECISION": "no",
}


def fsdp_on_cpu() -> None:
    """Let accelerate choose FSDP over gloo on the CPU device, as it chooses FSDP over NCCL on GPUs (CPU rehearsal)."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    os.environ.update(FSDP2_ENV, ACCELERATE_TORCH_DEVICE="cpu")
    PartialState._prepare_backend = lambda self, cpu=False, sagemaker_dp=False, backend=None: (
        "gloo", DistributedType.MULTI_GPU
    )


def peak_memory_gib() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # CPU rehearsal: peak RSS (KiB on Linux)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--max_steps", type=int, default=5)
    parser.add_argument("--per_device_train_batch_size", type=int, default=4)
    parser.add_argument("--model_name_or_path", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    parser.add_argument("--tiny", action="store_true", help="a tiny random Llama instead (CPU rehearsal)")
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision: CLSGenTrainer must refuse it")
    parser.add_argument("--zero3", action="store_true", help="launched with deepspeed_zero3.yaml: check ZeRO-3")
    parser.add_argument("--fsdp_on_cpu", action="store_true", help="CPU rehearsal under torchrun (see docstring)")
    args = parser.parse_args()
    if args.fsdp_on_cpu:
        fsdp_on_cpu()

    from peft import LoraConfig
    from safetensors.torch import load_file

    from clsgen_hf import CLSGenConfig, CLSGenTrainer, LlamaCLSGenConfig, LlamaForCLSGen, load_model, load_tokenizer
    from clsgen_hf.errors import UsageError

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    from tests.toy import toy_dataset

    # the config first: under ZeRO-3 (zero3_init_flag) it makes the model load partitioned, where peft#2450 bites
    config = CLSGenConfig(
        args.output_dir, max_steps=args.max_steps, per_device_train_batch_size=args.per_device_train_batch_size,
        learning_rate=1e-3, logging_steps=1, save_steps=args.max_steps, report_to=[], seed=0,
        bf16=None if args.zero3 else args.bf16,
    )
    tokenizer = load_tokenizer(args.model_name_or_path)
    if args.tiny:
        torch.manual_seed(0)
        model = LlamaForCLSGen(LlamaCLSGenConfig(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        ))
    else:
        model = load_model(args.model_name_or_path)
    model = model.to(torch.bfloat16)  # the backbone in bf16; `score` stays float32 (LlamaForCLSGen._apply)
    try:
        trainer = CLSGenTrainer(model, config, train_dataset=toy_dataset(64), processing_class=tokenizer,
                                peft_config=LoraConfig(r=8, target_modules="all-linear"))
    except UsageError as error:
        print(f"CHECK refused: {error}")
        return 3
    trainer.train()
    rank = trainer.args.process_index
    head = {n: p for n, p in trainer.model.named_parameters() if "score" in n and "modules_to_save" in n}
    weight = next(p for n, p in head.items() if n.endswith("weight"))
    local = weight.to_local() if hasattr(weight, "to_local") else weight
    numel = getattr(weight, "ds_numel", weight.numel())  # ZeRO-3: the full size behind a partitioned parameter
    print(f"CHECK rank={rank} fsdp={trainer.is_fsdp_enabled} deepspeed={trainer.is_deepspeed_enabled} "
          f"head_numel={numel} device={trainer.args.device} "
          f"head_dtype={weight.dtype} head_param={type(weight).__name__} head_shard={tuple(local.shape)} "
          f"peak_memory_gib={peak_memory_gib():.2f}", flush=True)
    final = os.path.join(args.output_dir, "final")
    trainer.save_model(final)
    trainer.accelerator.wait_for_everyone()
    if rank == 0:
        saved = load_file(os.path.join(final, "model.safetensors"))["score.weight"]
        reloaded = LlamaForCLSGen.from_pretrained(final).score.weight
        sharded = trainer.is_deepspeed_enabled if args.zero3 else trainer.is_fsdp_enabled
        ok = (sharded and weight.dtype == saved.dtype == reloaded.dtype == torch.float32
              and torch.equal(saved, reloaded.detach())
              and saved.shape == (model.config.num_labels, model.config.hidden_size))
        print(f"CHECK saved_head_dtype={saved.dtype} saved_head_shape={tuple(saved.shape)} reloaded_equal="
              f"{torch.equal(saved, reloaded.detach())}")
        print("CHECK OK" if ok else "CHECK FAILED")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
