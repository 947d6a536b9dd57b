# /// script
# requires-python = ">=3.11"
# dependencies = ["clsgen_hf"]
# ///
"""Train a CLSGen model: calibrated probability + explanation from one LoRA-tuned Llama.

With no arguments: the whole recipe on the embedded SmolLM2-135M-Instruct and CliniFact (binary view), sized for 2 CPU
cores (about 10 minutes). Every option is listed by `--help`; a YAML file can hold them (`--config recipe.yaml`).

Usage:

    python examples/train_clsgen.py
    accelerate launch examples/train_clsgen.py --max_train_samples 400 --num_train_epochs 2
    accelerate launch --config_file examples/accelerate_configs/multi_gpu.yaml examples/train_clsgen.py \\
        --model_name_or_path meta-llama/Llama-3.2-1B-Instruct --max_train_samples None --bf16
    python examples/train_clsgen.py --train_file my_train.csv --test_file my_test.csv \\
        --text_fields note --label_field outcome --explanation_column rationale
"""

import sys

from clsgen_hf.commands.train import main


if __name__ == "__main__":
    sys.exit(main())
