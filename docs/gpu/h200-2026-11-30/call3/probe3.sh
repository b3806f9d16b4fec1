set -uo pipefail
source tools/pythonpath.sh
site=/tmp/tjx-gpu-site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $site .gpu/whl/*.whl
export PYTHONPATH="$(tjx_pythonpath $PWD):$site" PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false HF_HUB_OFFLINE=1 TJX_CACHE=$PWD/.gpu/data
timeout 200 python3 .gpu/probe3.py 180 2>&1 | tee $OUT/probe3.log
