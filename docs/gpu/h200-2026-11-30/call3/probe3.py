"""Third device call, session 36: the never-measured cells (tokamax parts, the CE row kernel,
speculative decoding), through the suite's own section functions."""
import os, sys, time
from pathlib import Path
from tjx_tools.gpu_suite import ce_rows, environment, speculative, tokamax_parts
from tjx_tools.gpu_suite.report import Report
out = Path(os.environ["OUT"])
smoke = "--smoke" in sys.argv
report = Report(out, smoke=smoke, budget_s=float(sys.argv[1]))
report.meta = environment.describe()
for name, fn, reserve in (("tokamax_parts", tokamax_parts.run, 10.0), ("ce_rows", ce_rows.run, 20.0),
                          ("speculative", speculative.run, 30.0)):
    with report.section(name) as sec:
        fn(sec, smoke, time.perf_counter() + report.time_left() - (0 if smoke else reserve))
print(open(out / "results.md").read() if (out / "results.md").exists() else "no results.md")
