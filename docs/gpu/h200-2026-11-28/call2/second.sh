#!/usr/bin/env bash
# tools/gpu_suite's environment, then .gpu/second.py
set -uo pipefail
root="$(pwd)"
source tools/pythonpath.sh
site=/tmp/tjx-gpu-site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .gpu/whl/*.whl
export PYTHONPATH="$(tjx_pythonpath "$root"):$site:$root/tools"
export TJX_CACHE="$root/.gpu/data" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
python3 .gpu/second.py "$1" "$2"
