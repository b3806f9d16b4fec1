# one device call (session 6): HEAD's gpt2_small and llama_small steps with profiles, nanoGPT beside
# them with its own profile, then time to step 1 of the GPT-2 and Llama presets, cold and warm.
T0=$(date +%s); END=$((T0 + ${BUDGET:-470}))
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false TJX_CACHE=$PWD/.gpu/data
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
el() { echo "== $(( $(date +%s) - T0 )) s: $*"; }
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; nproc; git log -1 --format=%H 2>/dev/null;
  python3 -c "import jax, flax, optax, torch; print(jax.__version__, flax.__version__, optax.__version__, torch.__version__, jax.devices())"; } > $OUT/env.txt 2>&1
cat $OUT/env.txt
source tools/pythonpath.sh
R=$PWD; S=$R/.gpu/s6
el steps; PYTHONPATH=$(tjx_pythonpath $R) timeout 200 python3 $S/steps.py head --profile gpt2_small:model.attention_impl=pallas llama_small:
el peer; timeout 100 python3 apps/experiments/experiments/nanogpt/peer/torch_speed.py '{"batch": 16, "seq": 1024, "vocab": 50304, "d": 768, "layers": 12, "heads": 12, "warmup": 4, "steps": 30, "compile": true, "device": "cuda"}' | tee $OUT/peer.jsonl
el peerprof; timeout 80 python3 $S/peer_profile.py /tmp/profiles
el tar; (cd /tmp && tar czf $OUT/profiles.tar.gz profiles); cp /tmp/profiles/peer_kernels.json $OUT/ 2>/dev/null
el startup; PYTHONPATH=$(tjx_pythonpath $R):$R/tools timeout $((END - $(date +%s) + 5)) python3 $S/startup.py $END gpt2_small gpt2_medium llama_small gpt2_large
el done
