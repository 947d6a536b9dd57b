"""Train the toy task on a tiny model: in one process, under `torchrun` (DDP, or FSDP2 with `--fsdp`), or killed and
resumed (checkpoint tests); the trained model is saved to OUTPUT_DIR/final.

usage: python tests/scripts/train_toy.py OUTPUT_DIR [--max_steps N] [--save_steps N] [--resume] [--dump FILE]
       python -m torch.distributed.run --nproc_per_node 2 tests/scripts/train_toy.py OUTPUT_DIR --fsdp [options]
       python tests/scripts/train_toy.py recipe STEP_DELAY [clsgen-hf train options]

The last form runs the whole recipe (`clsgen-hf train`), sleeping STEP_DELAY seconds after each step, so that a
test can kill it between two checkpoints.

accelerate shards with FSDP only on an accelerator: on CPU it runs the job as MULTI_CPU, so `fsdp` alone would train
plain DDP (and `CLSGenTrainer` refuses it). `--fsdp` therefore gives accelerate's backend choice the one answer it
gives on GPUs (FSDP over torch.distributed, here gloo, on the CPU device); everything after that, wrapping, sharded
checkpoints, gathering the full state dict, is accelerate's and torch's own FSDP2 code. `--fsdp_requested_on_cpu`
asks for FSDP without that, as a user on a CPU machine would.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from transformers import TrainerCallback


sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from clsgen_hf import CLSGenConfig, CLSGenTrainer, load_tokenizer  # noqa: E402
from tests.toy import lora_config, tiny_model_for, toy_dataset  # noqa: E402


FSDP2_CONFIG = {
    "fsdp_version": 2,
    "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
    "reshard_after_forward": True,
    "state_dict_type": "SHARDED_STATE_DICT",
    "cpu_ram_efficient_loading": True,
}


class CountSteps(TrainerCallback):
    """Counts the steps this process trained (to tell a resume from a restart), sleeping `delay` s after each."""

    def __init__(self, delay: float = 0.0):
        self.delay, self.steps = delay, 0

    def on_step_end(self, *_, **__):
        self.steps += 1
        time.sleep(self.delay)


def run_accelerate_fsdp_on_cpu() -> None:
    """Make accelerate pick FSDP over gloo on the CPU device, as it picks FSDP over NCCL on GPUs."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    os.environ["ACCELERATE_TORCH_DEVICE"] = "cpu"
    PartialState._prepare_backend = lambda self, cpu=False, sagemaker_dp=False, backend=None: (
        "gloo", DistributedType.MULTI_GPU
    )


def recipe(step_delay: float, argv: list[str]) -> int:
    from clsgen_hf import training
    from clsgen_hf.commands import train

    counter = CountSteps(step_delay)

    class SlowTrainer(training.CLSGenTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(counter)

    training.CLSGenTrainer = SlowTrainer
    status = train.main(argv)
    print(f"FINISHED status={status} steps_here={counter.steps}")
    return status


def main() -> None:
    if sys.argv[1:2] == ["recipe"]:
        sys.exit(recipe(float(sys.argv[2]), sys.argv[3:]))
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir")
    parser.add_argument("--max_steps", type=int, default=4)
    parser.add_argument("--save_steps", type=int, default=100)
    parser.add_argument("--per_device_train_batch_size", type=int, default=2)
    parser.add_argument("--bf16_backbone", action="store_true", help="the FSDP2 setup: bf16 backbone, float32 head")
    parser.add_argument("--fsdp", action="store_true", help="shard with accelerate's FSDP2 (run under torchrun)")
    parser.add_argument("--fsdp_requested_on_cpu", action="store_true", help="ask for FSDP with use_cpu=True")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--dump", help="save the trained score + LoRA weights of this rank here")
    parser.add_argument("--step_delay", type=float, default=0.0, help="seconds to sleep per step (kill tests)")
    args = parser.parse_args()
    if args.fsdp:
        run_accelerate_fsdp_on_cpu()

    tokenizer = load_tokenizer()
    model = tiny_model_for(tokenizer)
    if args.bf16_backbone or args.fsdp or args.fsdp_requested_on_cpu:
        model = model.to(torch.bfloat16)
    if args.fsdp or args.fsdp_requested_on_cpu:
        sharding = dict(fsdp=True, fsdp_config=dict(FSDP2_CONFIG), use_cpu=args.fsdp_requested_on_cpu)
    else:
        sharding = dict(use_cpu=True, ddp_backend="gloo" if "WORLD_SIZE" in os.environ else None)
    trainer = CLSGenTrainer(
        model,
        CLSGenConfig(
            args.output_dir,
            max_steps=args.max_steps,
            per_device_train_batch_size=args.per_device_train_batch_size,
            learning_rate=1e-2,
            cls_loss_weight=1.0,  # test_distributed.py sized its bf16 tolerances on equal loss weights
            lr_scheduler_type="constant",
            logging_steps=1,
            save_steps=args.save_steps,
            report_to=[],
            seed=0,
            data_seed=0,
            **sharding,
        ),
        train_dataset=toy_dataset(32),
        processing_class=tokenizer,
        peft_config=lora_config(),
    )
    counter = CountSteps(args.step_delay)
    trainer.add_callback(counter)
    trainer.train(resume_from_checkpoint=args.resume or None)
    if args.dump:
        weights = {k: v.detach().cpu() for k, v in trainer.model.named_parameters() if v.requires_grad}
        torch.save(weights, f"{args.dump}.rank{trainer.args.process_index}.pt")
    head = {name: p for name, p in trainer.model.named_parameters() if "modules_to_save" in name and "score" in name}
    dtypes = sorted({str(p.dtype) for p in head.values()})
    kinds = sorted({type(p).__name__ for p in head.values()})
    trainer.save_model(os.path.join(args.output_dir, "final"))
    print(f"FINISHED global_step={trainer.state.global_step} steps_here={counter.steps} "
          f"fsdp={trainer.is_fsdp_enabled} "
          f"head_dtypes={','.join(dtypes)} head_params={','.join(kinds)}")
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()  # every rank leaves the process group together, none mid-teardown of another


if __name__ == "__main__":
    main()
