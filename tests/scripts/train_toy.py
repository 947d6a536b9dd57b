"""Train the toy task on a tiny model: run under `torchrun` (DDP test) or killed and resumed (checkpoint test).

usage: python tests/scripts/train_toy.py OUTPUT_DIR [--max_steps N] [--save_steps N] [--resume] [--dump FILE]
       python tests/scripts/train_toy.py recipe STEP_DELAY [clsgen-hf train options]

The second form runs the whole recipe (`clsgen-hf train`), sleeping STEP_DELAY seconds after each step, so that a
test can kill it between two checkpoints.
"""

import argparse
import os
import sys
from pathlib import Path

import time

import torch
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from clsgen_hf import CLSGenConfig, CLSGenTrainer, load_tokenizer  # noqa: E402
from tests.toy import lora_config, tiny_model_for, toy_dataset  # noqa: E402


class CountSteps(TrainerCallback):
    """Counts the steps this process trained (to tell a resume from a restart), sleeping `delay` s after each."""

    def __init__(self, delay: float = 0.0):
        self.delay, self.steps = delay, 0

    def on_step_end(self, *_, **__):
        self.steps += 1
        time.sleep(self.delay)


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
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--dump", help="save the trained score + LoRA weights of this rank here")
    parser.add_argument("--step_delay", type=float, default=0.0, help="seconds to sleep per step (kill tests)")
    args = parser.parse_args()

    tokenizer = load_tokenizer()
    trainer = CLSGenTrainer(
        tiny_model_for(tokenizer),
        CLSGenConfig(
            args.output_dir,
            max_steps=args.max_steps,
            per_device_train_batch_size=2,
            learning_rate=1e-2,
            logging_steps=1,
            save_steps=args.save_steps,
            report_to=[],
            use_cpu=True,
            ddp_backend="gloo" if "WORLD_SIZE" in os.environ else None,
            seed=0,
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
        rank = trainer.args.process_index
        torch.save(weights, f"{args.dump}.rank{rank}.pt")
    print(f"FINISHED global_step={trainer.state.global_step} steps_here={counter.steps}")


if __name__ == "__main__":
    main()
