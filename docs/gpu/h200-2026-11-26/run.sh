# one device call: main vs flat-params step vs nanoGPT on this GPU, a profile, then gpt2_large's start
T0=$(date +%s); END=$((T0 + ${BUDGET:-560}))
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false TJX_CACHE=$PWD/.gpu/data
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee $OUT/env.txt
python3 -c "import jax, flax, optax, torch; print(jax.__version__, flax.__version__, optax.__version__, torch.__version__, jax.devices())" | tee -a $OUT/env.txt
source tools/pythonpath.sh
R=$PWD; Q=$R/.gpu/s4/q2.py
el() { echo "== $(( $(date +%s) - T0 )) s: $*"; }
el main; PYTHONPATH=$(tjx_pythonpath $R) timeout 150 python3 $Q main gpt2_small:model.attention_impl=pallas
el flatp; (cd .gpu/s4/flatp && PYTHONPATH=$(tjx_pythonpath $PWD) timeout 150 python3 $Q flatp --profile gpt2_small:model.attention_impl=pallas)
el peer; timeout 150 python3 apps/experiments/experiments/nanogpt/peer/torch_speed.py '{"batch": 16, "seq": 1024, "vocab": 50304, "d": 768, "layers": 12, "heads": 12, "warmup": 4, "steps": 30, "compile": true, "device": "cuda"}' | tee $OUT/peer.jsonl
el flatp2; (cd .gpu/s4/flatp && PYTHONPATH=$(tjx_pythonpath $PWD) timeout 160 python3 $Q flatp2 llama_small: gpt2_small:model.attention_impl=cudnn)
el startup; PYTHONPATH=$(tjx_pythonpath $R):$R/tools timeout $((END - $(date +%s) + 5)) python3 .gpu/s4/startup1.py $END gpt2_large
el done
