"""Cold then warm time to step 1 of the given presets (tjx_tools.gpu_suite.startup), until DEADLINE."""
import json, os, sys, tempfile, time
from pathlib import Path
from tjx_tools.gpu_suite.startup import time_to_first_step
deadline = float(sys.argv[1])  # seconds since the epoch
out = open(os.path.join(os.environ["OUT"], "startup.jsonl"), "a")
root = Path(tempfile.mkdtemp(prefix="s6-cache-"))
for config in sys.argv[2:]:
    for temp in ("cold", "warm"):
        left = deadline - time.time()
        if left < 20:
            print("skipped", config, temp, flush=True); continue
        row = time_to_first_step(config, root / config, "kjv", False, min(240.0, left))
        row["cache"] = temp
        print(json.dumps(row), flush=True); out.write(json.dumps(row) + "\n"); out.flush()
        if row["status"] != "ok":
            break
