# one device call: gpt2_small's step under XLA flags that change GPU fusion (each its own process), and cuDNN attention
T0=$(date +%s); END=$((T0 + ${BUDGET:-400}))
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false HF_HUB_OFFLINE=1 WANDB_MODE=disabled
source tools/pythonpath.sh; R=$PWD; S=$R/.gpu/s6; export PYTHONPATH=$(tjx_pythonpath $R)
nvidia-smi --query-gpu=name --format=csv,noheader
run() { tag=$1; shift; left=$((END - $(date +%s))); [ $left -lt 45 ] && { echo "skip $tag"; return; }
  echo "== $(( $(date +%s) - T0 )) s: $tag"; XLA_FLAGS="$*" timeout $((left < 90 ? left : 90)) python3 $S/steps.py $tag $CASE 2>&1 | grep -E '^\{|rror' | cut -c1-700; }
CASE=gpt2_small:model.attention_impl=pallas
run base
run blocklevel --xla_gpu_experimental_enable_fusion_block_level_rewriter=true
run cudnnln --xla_gpu_enable_cudnn_layer_norm=true
run heroless --xla_gpu_experimental_enable_triton_heroless_priority_fusion=true
run tritonmof --xla_gpu_unsupported_enable_triton_multi_output_fusion=true
run warpspec --xla_gpu_experimental_enable_triton_warp_specialization=true
CASE=gpt2_small:model.attention_impl=cudnn run cudnn
echo "== $(( $(date +%s) - T0 )) s: done"
