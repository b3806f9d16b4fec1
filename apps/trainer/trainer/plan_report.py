"""The plan's few lines and its JSON: the compiled steps (`trainer.target_plan`) read through
tjx-metrics' roofline.

Every time is labelled an estimate: the roofline sums per-kernel max(FLOPs / peak, bytes / HBM
bandwidth) over the optimized program and leaves out launch overhead, untuned tiles, caches and
overlap (tjx-metrics' README). Memory is XLA's own analysis of the compiled program: exact.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from trainer.config import Config
from trainer.plan_compile import (
    Compiled,
    Say,
    budget_bytes,
    choose_kernel,
    compile_eval,
    fit,
)
from trainer.training import units_per_step


@dataclass
class PlanResult:
    """Everything the plan found (``--plan-json`` writes it)."""

    target: str
    config: str
    lines: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


#: Kernels listed in the "top kernels" line.
TOP = 5
#: Below this much estimated work per kernel launch, the plan says launch overhead dominates.
LAUNCH_BOUND_S = 5e-6
_DOT = re.compile(r"= f32\[[^\]]*\][^ ]* (?:dot|convolution)\((%[^,]+),")


def model_flops(run: Config) -> tuple[float, float]:
    """Model FLOPs of one step: (causal attention at half, MaxText/torchtitan; PaLM's full)."""
    from tjx import nn

    units = units_per_step(run)
    seq = run.data.seq_len
    half = nn.flops_per_unit(run.model, seq, causal_half=True) * units
    full = nn.flops_per_unit(run.model, seq, causal_half=False) * units
    return half, full


def kernel_costs(run: Config, target: Any) -> Any:
    """tjx-kernels' prices for its own Triton kernels, as tjx-metrics' roofline asks for them
    (the model says whether its attention is causal; the target which launch it took)."""
    from tjx import kernels

    # Under a context split only each device's own block is causal: the others are priced whole
    # (its causal half overcounted: 1/C more attention work than is done; README).
    causal = run.task in ("lm", "seq2seq") and run.mesh.context == 1
    capability = target.device.compute_capability or (0, 0)

    def cost(call: Any) -> Any:
        if call.kernel is None:
            return None
        return kernels.custom_call_cost(
            call.kernel,
            call.grid,
            [(a.dtype, a.dims) for a in call.operands],
            [(a.dtype, a.dims) for a in call.results],
            causal=causal,
            device_kind=target.device.device_kind,
            hopper=capability >= (9, 0),
        )

    return cost


def f32_dots(text: str) -> list[str]:
    """The JAX operations (``op_name``) behind every float32 matrix product of a program."""
    names = []
    for line in text.splitlines():
        m = _DOT.search(line)
        if m is None:
            continue
        operand = re.search(r"(?:dot|convolution)\(%([^,\s)]+)", line)
        op_name = re.search(r'op_name="([^"]*)"', line)
        if operand is not None and _operand_is_f32(text, operand.group(1)):
            names.append(op_name.group(1) if op_name else "?")
    return sorted(set(names))


def _operand_is_f32(text: str, name: str) -> bool:
    found = re.search(rf"%{re.escape(name)} = (\w+)\[", text)
    return found is not None and found.group(1) == "f32"


def _gb(x: float) -> str:
    return f"{x / 1e9:,.1f} GB"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms"


def estimate(step: Compiled, run: Config, target: Any, say: Say) -> dict[str, Any]:
    """The roofline of a compiled train step, said in two lines (three on a mesh)."""
    from tjx.metrics import roofline

    est = roofline(
        step.compiled.as_text(), target.device, custom_call_cost=kernel_costs(run, target)
    )
    calls: Counter[str] = Counter()
    for k in est.kernels:
        if k.kind in ("attention", "custom call") or k.detail.startswith("__cublas"):
            calls[k.detail] += k.count
    shown = ", ".join(f"{name} ×{n}" for name, n in calls.items()) or "none"
    say(f"custom calls per step: {shown}")
    half, full = model_flops(run)
    devices = target.count
    tokens = units_per_step(run) / est.seconds
    mfu, palm = est.mfu(half, devices), est.mfu(full, devices)
    unit = run.objective.unit
    say(
        f"estimate: {_ms(est.seconds)} per step, {tokens:,.0f} {unit}/s, MFU {mfu:.0%} "
        f"(PaLM convention: {palm:.0%}) — an estimate: per-kernel roofline over the compiled "
        f"program; {_gb(est.bytes)} moved by {est.launches:,} kernel launches, "
        f"{est.flops / 1e12:,.2f} TFLOP (model: {half / devices / 1e12:,.2f} per device)"
    )
    top = ", ".join(
        f"{k.name} {_ms(k.total_seconds)} ({k.kind}{f' ×{k.count}' if k.count > 1 else ''})"
        for k in est.top(TOP)
    )
    say(f"  slowest kernels: {top}")
    collectives: list[dict[str, Any]] = []
    if est.collectives:
        grouped: dict[str, list[Any]] = {}
        for k in est.collectives:
            grouped.setdefault(k.detail, []).append(k)
        parts = []
        for detail, ks in grouped.items():
            wire = sum(k.wire_bytes * k.count for k in ks)
            secs = sum(k.total_seconds for k in ks)
            n = sum(k.count for k in ks)
            parts.append(f"{detail} ×{n}: {_gb(wire)} on the wire, {_ms(secs)}")
            collectives.append({"collective": detail, "count": n, "wire_bytes": wire, "s": secs})
        say(f"  collectives (est., at {target.device.link_bandwidth / 1e9:.0f} GB/s per device "
            f"each way): {'; '.join(parts)}")  # fmt: skip
    if est.launches and est.seconds / est.launches < LAUNCH_BOUND_S:
        say(
            f"  note: {est.seconds / est.launches * 1e6:.1f} µs of work per kernel launch on "
            "average: launch overhead (a few µs each on a GPU; not in the estimate) will dominate "
            "a step this small"
        )
    for note in grouped_notes(est.notes):
        say(f"  note: {note}")
    return {
        "custom_calls": dict(calls),
        "seconds": est.seconds,
        "bytes": est.bytes,
        "flops": est.flops,
        "launches": est.launches,
        "model_flops": half,
        "model_flops_palm": full,
        "mfu": mfu,
        "mfu_palm": palm,
        "tokens_per_s": tokens,
        "by_kind": est.by_kind(),
        "top": [
            {"name": k.name, "kind": k.kind, "count": k.count, "s": k.total_seconds}
            for k in est.top(20)
        ],
        "collectives": collectives,
        "notes": list(est.notes),
    }


def grouped_notes(notes: Iterable[str]) -> list[str]:
    """The roofline's notes, one line per kind: ``"<op>: <what>"`` notes that say the same of
    several ops (a context split's ring has a conditional per step and layer) become one."""
    ops: dict[str, list[str]] = {}
    for note in notes:
        op, sep, what = note.partition(": ")
        ops.setdefault(what if sep else note, []).append(op if sep else "")
    out = []
    for what, names in ops.items():
        if len(names) == 1:
            out.append(f"{names[0]}: {what}" if names[0] else what)
        else:
            shown = ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
            out.append(f"{what}: {len(names)} of them ({shown})")
    return out


def plan(run: Config, target: Any, text: str, say: Say) -> PlanResult:
    """Compile, fit and estimate ``run`` on ``target`` (see `trainer.target_plan`)."""
    from tjx.metrics import GIB

    result = PlanResult(text, run.name)
    data = result.data
    data.update(target=text, device=target.device.key, devices=target.count, config=run.name)
    say(
        f"plan: {run.name} on {target.describe()}, compiled without the device; nothing is "
        "trained, nothing written"
    )
    run, step, line = choose_kernel(run, target, say)
    data["attention"] = {"kernel": run.model.attention_impl, "line": line}
    first_error = step.error
    if first_error is not None and not step.out_of_memory:
        result.error = f"--plan {text}: the train step does not compile: {first_error}"
        data["train"] = {"compiles": False, "error": first_error}
        say(f"train step: does not compile ({first_error})")
        return result
    if step.error is None:
        say(f"train step: compiles ({step.seconds:.1f} s)")
        if step.note:
            say(f"  note: {step.note}")
    else:
        say(f"train step: the compiler refuses it for memory ({step.error[:120]})")
    fitted, chosen, memory = fit(run, target, step, say)
    data["memory"] = memory
    if not memory["fits"]:
        result.error = _does_not_fit(text, target, memory)
    text_hlo = (chosen.compiled.as_text() if chosen.compiled is not None else "") or ""
    data["train"] = {
        "compiles": chosen.compiled is not None,
        "compile_s": chosen.seconds,
        "peak_bytes": chosen.peak,
        "changes": chosen.label,
        "f32_dots": f32_dots(text_hlo),
        "note": chosen.note,
        "remat": fitted.model.remat,
        "accumulation_steps": fitted.optimizer.accumulation_steps,
    }
    if chosen.compiled is not None:
        data["estimate"] = estimate(chosen, fitted, target, say)
        data["train"]["custom_calls"] = data["estimate"].pop("custom_calls")
    evaluated = compile_eval(fitted, target)
    if evaluated.error is not None:
        say(f"eval step: does not compile ({evaluated.error})")
        result.error = result.error or f"--plan {text}: the eval step does not compile"
    else:
        assert evaluated.peak is not None
        say(
            f"eval step: compiles in {evaluated.seconds:.1f} s; {evaluated.peak / GIB:.2f} GiB "
            f"per device for a batch of {fitted.eval.batch_size}"
        )
    data["eval"] = {"compiles": evaluated.error is None, "peak_bytes": evaluated.peak}
    return result


def _does_not_fit(text: str, target: Any, memory: dict[str, Any]) -> str:
    from tjx.metrics import GIB

    budget, _ = budget_bytes(target.device)
    peaks = [t["peak_bytes"] for t in memory["tried"] if t["peak_bytes"] is not None]
    over = f" by {(min(peaks) - budget) / GIB:.2f} GiB" if peaks else ""
    tried = ", ".join(t["change"] for t in memory["tried"][1:])
    more = 4 * target.count
    return (
        f"--plan {text}: the train step does not fit{over} per device"
        f"{f' even with {tried}' if tried else ''}; lower data.batch_size or data.seq_len, or "
        f"shard the parameters and optimizer state over more devices (--plan "
        f"{more}x{target.device.key} --set mesh.strategy=fsdp --set mesh.data=1 --set "
        "mesh.fsdp=-1)"
    )
