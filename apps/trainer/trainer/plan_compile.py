"""``--plan``'s compiles: the run's steps for the target's devices, the attention kernel
``auto`` takes there, and what the memory fit would do (`trainer.target_plan` says the whole).

A failed compile is kept as a finding (`Compiled.error`), never raised: the plan reports it in one
line. A compiler that refuses a step for its memory (a TPU's ``RESOURCE_EXHAUSTED``) is "does not
fit", and the fit goes on to full remat and then more micro-batches, as `trainer.memory_fit` would
(the micro-batches are advice: the trainer does not split a batch itself).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trainer.config import Config
from trainer.schema import ConfigError

Say = Callable[[str], None]


@dataclass
class Compiled:
    """One step compiled for the target: the program, its memory, or why it failed."""

    label: str
    seconds: float
    compiled: Any = None
    error: str | None = None
    peak: int | None = None  # bytes per device (XLA's memory analysis; None when refused)
    note: str | None = None  # how it was compiled when not as usual

    @property
    def out_of_memory(self) -> bool:
        """The compiler refused it for memory (a TPU's), or it is larger than ``budget``."""
        return self.error is not None and self.error.startswith("RESOURCE_EXHAUSTED")


def budget_bytes(device: Any) -> tuple[int, str]:
    """Bytes a step may use on ``device`` and how that was decided: on a GPU, JAX's allocator
    takes ``XLA_PYTHON_CLIENT_MEM_FRACTION`` (default 0.75) of the memory; a TPU's compiler
    itself refuses a program larger than the chip's HBM."""
    import os

    from tjx.metrics import GIB

    total = int(device.memory_bytes)
    if device.platform != "gpu":
        return total, f"of the {device.name}'s {total / GIB:.1f} GiB"
    fraction = float(os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.75"))
    why = (
        f"of the {total * fraction / GIB:.1f} GiB JAX takes of the {device.name}'s "
        f"{total / GIB:.1f} GiB (XLA_PYTHON_CLIENT_MEM_FRACTION={fraction:g})"
    )
    return int(total * fraction), why


#: XLA's GPU compiler without autotuning gives each Triton GEMM a minimal tile config, which a
#: few shapes cannot take ("Couldn't find output tile sizes"); a GPU would autotune past it.
UNTUNED_GEMM = "Couldn't find output tile sizes"
CUBLAS_NOTE = (
    "XLA's untuned Triton GEMM has no tiles for a shape here (a deviceless compile cannot "
    "autotune); compiled with xla_gpu_enable_triton_gemm=false (cuBLAS GEMMs)"
)


def _compile(lowered: Any, label: str, started: float) -> Compiled:
    """Compile ``lowered``; an untuned Triton GEMM that fails is compiled with cuBLAS instead."""
    from tjx.metrics import peak_bytes

    note = None
    try:
        try:
            compiled = lowered.compile()
        except Exception as err:  # retried once without Triton GEMMs, else reported
            if UNTUNED_GEMM not in str(err):
                raise
            compiled = lowered.compile(compiler_options={"xla_gpu_enable_triton_gemm": False})
            note = CUBLAS_NOTE
    except Exception as err:  # a compile error is a finding: one line in the plan
        return Compiled(label, time.perf_counter() - started, error=_first_line(err))
    took = time.perf_counter() - started
    return Compiled(label, took, compiled, peak=peak_bytes(compiled)["peak"], note=note)


def compile_train(run: Config, target: Any, label: str) -> Compiled:
    """Compile ``run``'s train step for ``target``'s devices; a failure is kept, not raised
    (a `ConfigError` about the mesh or batch is raised)."""
    from tjx import kernels
    from trainer import abstract_run
    from trainer.deviceless import quiet_native_stderr

    started = time.perf_counter()
    with kernels.target(*target.kernel_target), quiet_native_stderr():
        built = abstract_run.build(run, target.devices)
        try:
            lowered = built.train_step.lower(built.state, built.batch)
        except Exception as err:  # a kernel that does not lower: the choice's fallback line
            return Compiled(label, time.perf_counter() - started, error=_first_line(err))
        return _compile(lowered, label, started)


def compile_eval(run: Config, target: Any) -> Compiled:
    """Compile ``run``'s eval step (one batch of ``eval.batch_size``) for ``target``."""
    from tjx import kernels
    from trainer import abstract_run, dpo
    from trainer.deviceless import quiet_native_stderr

    started = time.perf_counter()
    with kernels.target(*target.kernel_target), quiet_native_stderr():
        built = abstract_run.build(run, target.devices)
        try:
            refs = dpo.reference_args(built.state)  # DPO's frozen reference params, if any
            lowered = built.eval_step.lower(built.state["params"], built.eval_batch, *refs)
        except Exception as err:  # reported, as for the train step
            return Compiled("the eval step", time.perf_counter() - started, error=_first_line(err))
        return _compile(lowered, "the eval step", started)


def _first_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[0] if lines else type(err).__name__


def choose_kernel(run: Config, target: Any, say: Say) -> tuple[Config, Compiled, str]:
    """The attention kernel ``auto`` (or the config) takes on ``target``, said as a run says it,
    with its compiled train step: (run with that kernel, compiled step, the choice's line)."""
    from tjx import kernels
    from trainer.attention_choice import split_kernel_line

    impl = run.model.attention_impl
    lines: list[str] = []

    def tell(line: str) -> None:
        lines.append(line)
        say(line)

    built: dict[str, Compiled] = {}

    def build(kernel: str) -> None:
        built[kernel] = compile_train(run.with_model(attention_impl=kernel), target, kernel)
        error = built[kernel].error
        if error is not None:
            raise RuntimeError(error)

    with kernels.target(*target.kernel_target):  # auto's block kernel is the target's
        split_line = split_kernel_line(run, target.count)
    if split_line is not None:  # the blocks of a context split: no cuDNN, nothing to choose
        tell(split_line)
        chosen = impl
    elif impl == "xla":
        tell("attention: xla (model.attention_impl)")
        chosen = "xla"
    else:
        dtype, head_dim = run.model.precision.compute_dtype, run.model.head_dim
        with kernels.target(*target.kernel_target):
            order = kernels.kernel_order(
                impl,
                dtype,
                head_dim,
                named_by="model.attention_impl",
                say=tell,
                softcap=run.model.attn_logit_softcap is not None,  # cuDNN cannot soft-cap
            )
        try:
            chosen = kernels.first_that_compiles(order, build, explicit=impl != "auto", say=tell)
        except kernels.KernelCompileError as err:
            raise ConfigError(f"--plan: {err}") from None
    if chosen not in built:
        built[chosen] = compile_train(run.with_model(attention_impl=chosen), target, chosen)
    return run.with_model(attention_impl=chosen), built[chosen], "; ".join(lines)


def fit(run: Config, target: Any, first: Compiled, say: Say) -> tuple[Config, Compiled, dict]:  # type: ignore[type-arg]
    """What the trainer's memory fit would do with ``first`` (the step as configured): keep it,
    else take full remat (``train.fit_memory``), else split the batch into more micro-batches
    until it fits (advice: the trainer does not do that itself). Says one line per step compiled;
    returns the run and step the plan goes on with, and what was tried."""
    from tjx.metrics import GIB

    budget, why = budget_bytes(target.device)

    def fits(c: Compiled) -> bool:
        return c.error is None and c.peak is not None and c.peak <= budget

    def sized(c: Compiled) -> bool:  # compiled, or refused only for its memory
        return c.error is None or c.out_of_memory

    current, step, tried = run, first, [first]
    if not fits(step) and sized(step) and run.model.remat == "none":
        current = run.with_model(remat="full")
        step = compile_train(current, target, "model.remat=full")
        tried.append(step)
    batch, ways = run.data.batch_size, _batch_ways(run, target)
    micro = current.optimizer.accumulation_steps
    while not fits(step) and sized(step):
        micro *= 2
        if batch % micro or (batch // micro) % ways:
            break
        current = _with_accumulation(current, micro)
        step = compile_train(current, target, f"optimizer.accumulation_steps={micro}")
        tried.append(step)
    record: dict[str, Any] = {"budget_bytes": budget, "budget": why, "fits": fits(step)}
    record["tried"] = [{"change": c.label, "peak_bytes": c.peak, "error": c.error} for c in tried]
    for c in tried:
        if not sized(c):
            continue
        need = f"{c.peak / GIB:.2f} GiB" if c.peak is not None else _refused(c.error or "")
        what = "as configured" if c is first else f"with {c.label}"
        say(f"memory: {what}: {need} per device {why}: {'fits' if fits(c) else 'does not fit'}")
    return (current, step, record) if fits(step) else (run, first, record)


def _refused(error: str) -> str:
    """A TPU compiler's out-of-memory message, in a few words (its figures when it gives them)."""
    import re

    found = re.search(r"\(([\d.]+[KMGT]?)\) exceeds available HBM \(([\d.]+[KMGT]?)\)", error)
    if found is None:
        return "more than the chip has (the compiler refuses it)"
    return f"{found.group(1)} of temporaries alone (the compiler refuses it; {found.group(2)} free)"


def _batch_ways(run: Config, target: Any) -> int:
    """Devices a batch is split over on the planned mesh (data × fsdp)."""
    sizes = run.mesh.resolve(target.count)
    return int(sizes[1] * sizes[2])


def _with_accumulation(run: Config, steps: int) -> Config:
    """``run`` with ``optimizer.accumulation_steps=steps`` (the batch split into micro-batches)."""
    import dataclasses

    optimizer = dataclasses.replace(run.optimizer, accumulation_steps=steps)
    return dataclasses.replace(run, optimizer=optimizer)
