#!/usr/bin/env bash
# FSDP2 (and, where deepspeed is installed, ZeRO-3) on the GPUs of one machine: a few CLSGen steps each, peak memory
# and the head's dtype printed, the saved folder reloaded. One GPU is enough (FSDP2 on one rank); NPROC=2 runs two.
#
#   examples/gpu/check_fsdp2.sh [OUTPUT_DIR]      # default outputs/check-fsdp2
#   CPU=1 examples/gpu/check_fsdp2.sh /tmp/check   # the CPU rehearsal: tiny model, 2 processes over gloo
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-outputs/check-fsdp2}
PYTHON=${PYTHON:-python}
status=0

if [ "${CPU:-0}" = 1 ]; then
  OMP_NUM_THREADS=1 timeout 300 "$PYTHON" -m torch.distributed.run --nproc_per_node 2 examples/gpu/check_fsdp2.py \
    --output_dir "$OUT/fsdp2-cpu" --tiny --fsdp_on_cpu --max_steps 3 2>&1 | grep -a "CHECK" || status=1
  exit $status
fi

NPROC=${NPROC:-1}
LAUNCH=("$PYTHON" -m accelerate.commands.launch --num_processes "$NPROC")
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true

echo "== FSDP2, bf16 backbone, float32 head"
timeout 240 "${LAUNCH[@]}" --config_file examples/accelerate_configs/fsdp2.yaml examples/gpu/check_fsdp2.py \
  --output_dir "$OUT/fsdp2" --max_steps 5 > "$OUT.fsdp2.log" 2>&1
grep -a "CHECK" "$OUT.fsdp2.log"; grep -aq "CHECK OK" "$OUT.fsdp2.log" || { tail -40 "$OUT.fsdp2.log"; status=1; }

echo "== FSDP2 with bf16 mixed precision: must be refused with one line naming --bf16"
timeout 120 "${LAUNCH[@]}" --config_file examples/accelerate_configs/fsdp2.yaml examples/gpu/check_fsdp2.py \
  --output_dir "$OUT/fsdp2-bf16" --max_steps 1 --bf16 > "$OUT.fsdp2-bf16.log" 2>&1
grep -a "CHECK refused: FSDP2 with mixed_precision='bf16'" "$OUT.fsdp2-bf16.log" || { tail -40 "$OUT.fsdp2-bf16.log"; status=1; }

echo "== DeepSpeed ZeRO-3"
if "$PYTHON" -c "import deepspeed" 2>/dev/null; then
  timeout 240 "${LAUNCH[@]}" --config_file examples/accelerate_configs/deepspeed_zero3.yaml examples/gpu/check_fsdp2.py \
    --output_dir "$OUT/zero3" --max_steps 5 --zero3 > "$OUT.zero3.log" 2>&1
  grep -a "CHECK" "$OUT.zero3.log" || { tail -60 "$OUT.zero3.log"; status=1; }
else
  echo "skipped: deepspeed is not installed (pip install deepspeed into this environment to run it)"
fi
exit $status
