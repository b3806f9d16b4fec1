"""Second device call of session 19: tokamax (with tjx's jax-0.11 alias shim) alone and in the
step, the gated delta kernels, gpt2 cuDNN step, the search winner. One-off driver over the
suite's own cells (rows identical in form to --part all's)."""
import json, sys, time
from pathlib import Path
import jax
from tjx.kernels import enable_compilation_cache
from tjx_tools.gpu_suite import environment, one_call, delta_rule
from tjx_tools.gpu_suite.report import Report
import tokamax_gpu

out = Path(sys.argv[1]); budget = float(sys.argv[2])
enable_compilation_cache()
report = Report(out, smoke=False, budget_s=budget)
report.meta = environment.describe()
call = one_call.Call(report, False, report.meta, out)
shape = one_call.shapes(False)
with report.section("tokamax_attention") as sec:
    with sec.cell("tokamax s1024 d64 / s4096 d128"):
        rows = []
        for b, h, s, d in [(16, 32, 1024, 64), (4, 16, 4096, 128)]:
            rows += tokamax_gpu.measure_cells([(s, d)], kernels=("tokamax", "pallas", "cudnn"),
                                              batch=b, heads=h, iters=10, autotune=False)
            sec.rows = rows
            sec.markdown = "```\n" + "\n".join(json.dumps(r) for r in rows) + "\n```"
            print(sec.markdown, flush=True)
            if sec.saver: sec.saver()
with report.section("steps2") as sec:
    for name in ("gpt2", "llama"):
        config, sets = shape[name]
        call.step(sec, f"{name} tokamax", "tokamax", config, [*sets, "model.attention_impl=tokamax"])
with report.section("gated_delta") as sec:
    if call.starts(sec, "the gated delta kernels", "gated delta"):
        delta_rule.run(sec, False, call.deadline(20.0))
with report.section("steps3") as sec:
    config, sets = shape["gpt2"]
    call.step(sec, "gpt2 cudnn", "cudnn", config, [*sets, "model.attention_impl=cudnn"])
    config, sets = shape["winner"]
    call.step(sec, "search winner", "search winner", config, sets)
print(Path(out, "results.md").read_text())
