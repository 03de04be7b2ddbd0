#!/bin/bash
# The prepared run for a lent GPU (about 9 minutes on one H200), from the repository root:
#   1. bench.gpu_check: bf16 training throughput and MFU of the `base` preset's model (SDPA, eager
#      attention, the flash kernel, the LSTM on and off, batch 32 and 128), bf16 generate() eager
#      against compiled;
#   2. two sentiment recipes side by side from checkpoints/memory-lm (--max_train_minutes bounds each);
#   3. the memory classifier (the `sentiment-memory` preset) from the one with the better validation
#      accuracy, and bench.memory_classifier on both;
#   4. the compiled training settings of bench.gpu_check, if time is left.
# Results go to $OUT (default /tmp/gpu-out): JSON, logs and the two models' weights in 15 MB parts
# (`cat PART-* > model.safetensors`). Packages the GPU machine lacks can be given as wheels in .whl/.
set -u
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, datasets, huggingface_hub, pyarrow, fsspec, sklearn; print('versions', torch.__version__, transformers.__version__, datasets.__version__, huggingface_hub.__version__, pyarrow.__version__, fsspec.__version__)" || exit 1
W=/tmp/w; mkdir -p $W/logs
el gpu_check
timeout 130 python3 -m bench.gpu_check --parts training,generate --json $OUT/gpu_check.json > $W/logs/gpu_check.log 2>&1
el "gpu_check rc=$?"; grep -v Warning $W/logs/gpu_check.log | tail -8
S="python3 -m llm_memory.training --preset sentiment --use_cpu false --eval_steps 500 --save_steps 500 --dataloader_num_workers 2"
HF_DATASETS_CACHE=$W/cache1 timeout 215 $S --output_dir $W/s1 --max_steps 5000 --max_train_minutes 2.7 > $W/logs/s1.log 2>&1 &
P1=$!
HF_DATASETS_CACHE=$W/cache2 timeout 215 $S --output_dir $W/s2 --max_steps 3000 --per_device_train_batch_size 64 --learning_rate 4e-4 --max_train_minutes 2.7 > $W/logs/s2.log 2>&1 &
P2=$!
wait $P1; el "s1 rc=$?"; wait $P2; el "s2 rc=$?"
tail -4 $W/logs/s1.log $W/logs/s2.log
BEST=$(python3 -c "
import json, os
scores = {n: json.load(open(f'$W/{n}/all_results.json')).get('eval_accuracy', 0) for n in ('s1', 's2') if os.path.exists(f'$W/{n}/all_results.json')}
print(max(scores, key=scores.get) if scores else '')")
el "best: $BEST"
if [ -n "$BEST" ]; then
  timeout 140 python3 -m llm_memory.training --preset sentiment-memory --use_cpu false --init_from $W/$BEST --output_dir $W/c --max_train_minutes 1.6 > $W/logs/c.log 2>&1
  el "c rc=$?"; tail -3 $W/logs/c.log
  MODELS="sentiment=$W/$BEST"; [ -f $W/c/config.json ] && MODELS="$MODELS memory=$W/c"
  timeout 75 python3 -m bench.memory_classifier --models $MODELS --batch_size 64 --json $W/memory_classifier.json > $W/logs/bench.log 2>&1
  el "bench rc=$?"; tail -8 $W/logs/bench.log
  split -b 15m $W/$BEST/model.safetensors $OUT/sentiment.safetensors.part-
  [ -f $W/c/model.safetensors ] && split -b 15m $W/c/model.safetensors $OUT/memory_classifier.safetensors.part-
fi
if [ $(( $(date +%s) - T0 )) -lt 480 ]; then
  timeout $(( 540 - ($(date +%s) - T0) )) python3 -m bench.gpu_check --parts compiled-training --json $W/gpu_check_compiled.json > $W/logs/gpu_check_compiled.log 2>&1
  el "compiled training rc=$?"
fi
cd $W && tar czf $OUT/results.tar.gz --exclude='*.safetensors' --exclude='checkpoint-*' --exclude='cache*' --exclude='runs' logs s1 s2 c memory_classifier.json gpu_check_compiled.json 2>/dev/null
el done; ls -la $OUT
