#!/usr/bin/env bash
# The GPU checks, in one script (under 8 minutes on one GPU), run where a GPU is lent:
#   1. a short fine-tune on CUDA (AMP and channels_last are automatic there) of a resnet50 + r50-max artifact;
#   2. the same fine-tune under torchrun, DDP with NCCL at world size 1 (resumed from nothing: --overwrite);
#   3. the CUDA and CUDA-AMP report (latency at batch 1 and 64, side by side with the original, in one run each) for
#      resnet50 (r50-max, r50-hybrid), mobilenetv2_100 and efficientnet_lite0 (maxpool, dw-hybrid), convnext_tiny
#      (maxpool), at 224 px. Models are built locally (random init: latency does not depend on the weights).
# Results go to OUT (default runs/gpu_check): finetune.json, finetune-ddp.json, report.md (the tables), log.txt.
#
#   benchmarks/gpu_check.sh [OUT]             # on the GPU machine
#   benchmarks/gpu_check.sh --dry-run [OUT]   # on a CPU: the same steps and flags, tiny sizes, smaller models of the
#                                             # same families (resnet26, mobilenetv2_050, convnext_atto), CPU backends
#                                             # (tests/integration/test_gpu_check.py runs it)
#
# Data: tests/data/fashion-mnist (committed), so nothing is downloaded. Set PYTHON to choose the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT=${1:-runs/gpu_check}
PY=${PYTHON:-python}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
: > "$LOG"
DATA=tests/data/fashion-mnist

if [ "$DRY" = 1 ]; then
  DEVICE=cpu; BACKENDS=cpu-eager; SIZES=1,2; PX=32; RUNS=(--runs 1 --warmup 0 --max-seconds 1 --no-memory)
  TRAIN=(--train-images 32 --batch-size 16 --limit-val 32 --bn-recalib-images 32 --workers 0)
  DDP_DEVICE=cpu; R50=resnet26; MNV2=mobilenetv2_050; LITE=efficientnet_lite0; CNX=convnext_atto
else
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: run with --dry-run')"
  DEVICE=cuda; BACKENDS=cuda,cuda-amp; SIZES=1,64; PX=224; RUNS=(--runs 20 --warmup 5 --max-seconds 20)
  TRAIN=(--train-images 4096 --batch-size 64 --limit-val 512 --bn-recalib-images 512 --workers 4)
  DDP_DEVICE=cuda; R50=resnet50; MNV2=mobilenetv2_100; LITE=efficientnet_lite0; CNX=convnext_tiny
fi

step() { echo "== $*" | tee -a "$LOG" >&2; }
run() { echo "\$ pfconvert $*" >> "$LOG"; "$PY" -m pfconvert "$@" 2>> "$LOG"; }

step "environment"
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee -a "$LOG"

step "convert $R50 + r50-max (10 classes, 64 px) for the fine-tunes"
run convert "$R50" --rule r50-max --num-classes 10 --input-size 3,64,64 --out "$OUT/r50-max" --overwrite --json \
  > "$OUT/convert.json"

step "fine-tune on $DEVICE (AMP and channels_last on CUDA)"
run finetune "$OUT/r50-max" --data "$DATA" --device "$DEVICE" --kd-weight 0 "${TRAIN[@]}" --overwrite --quiet --json \
  > "$OUT/finetune.json"

step "fine-tune under torchrun, world size 1 ($DDP_DEVICE: NCCL on CUDA, gloo on CPU)"
echo "\$ torchrun --nproc_per_node 1 -m pfconvert finetune ..." >> "$LOG"
"$PY" -m torch.distributed.run --nproc_per_node 1 --master_port "${MASTER_PORT:-29533}" -m pfconvert finetune \
  "$OUT/r50-max" --data "$DATA" --device "$DDP_DEVICE" --kd-weight 0 "${TRAIN[@]}" --overwrite --quiet --json \
  > "$OUT/finetune-ddp.json" 2>> "$LOG"

step "reports: $BACKENDS at batch $SIZES, $PX px"
: > "$OUT/report.md"
for pair in "$R50:r50-max" "$R50:r50-hybrid" "$MNV2:maxpool" "$MNV2:dw-hybrid" "$LITE:maxpool" "$LITE:dw-hybrid" \
            "$CNX:maxpool"; do
  model=${pair%%:*}; rule=${pair##*:}
  step "report $model + $rule"
  echo "## $model + $rule" >> "$OUT/report.md"
  run report "$model" --rule "$rule" --backends "$BACKENDS" --batch-sizes "$SIZES" --input-size "3,$PX,$PX" \
    "${RUNS[@]}" --markdown >> "$OUT/report.md"
done

"$PY" - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
for name in ("finetune.json", "finetune-ddp.json"):
    run = json.load(open(f"{out}/{name}"))
    assert run["status"] == "completed", (name, run["status"])
    print(f"{name}: {run['status']}, {run['global_step']} steps on {run['device']} ({run['precision']}, "
          f"{run['world_size']} process(es)), {run['images_per_s']:.0f} images/s")
EOF
step "done: $OUT/report.md"
