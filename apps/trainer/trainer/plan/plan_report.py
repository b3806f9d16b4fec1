"""A plan's report: an app's run compiled for a target, fitted to its memory, estimated, said.

An app knows how to compile its own run (its steps over the target's devices, with an attention
kernel, lighter by a setting) and which kernel it takes; :func:`plan_report` puts those together
in the order a plan says them: the kernel's choice, whether the train step compiles, the memory
fit (:func:`fit_compiled`), the roofline :func:`estimate` and the eval step, each in a line, and
the whole in a JSON-ready ``data`` dict. Nothing raises for a step that fails: the first failure
that ends the plan is the result's ``error`` line. :func:`open_target` and :func:`local_target`
give the :class:`Target` a plan is for: devices that are not here, or this machine's own.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Callable, Iterable
from typing import TypeVar

import jax

from tjx.kernels.compile_cache import compilation_cache_dir
from tjx.metrics.accelerators import accelerator, accelerator_of, gpu_target_config, parse_target
from tjx.metrics.compile_findings import CompileFindings, target_key
from tjx.metrics.compiled import Compiled, fit_compiled
from tjx.metrics.deviceless import Target, check_packages, quiet_native_stderr, use_cpu_platform
from tjx.metrics.memory import GIB, budget_bytes
from tjx.metrics.roofline_report import estimate, f32_dots, gemm_operands
from trainer.config.seams import Record

__all__ = ["PlanResult", "does_not_fit", "local_target", "open_target", "plan_report"]

T = TypeVar("T")
Say = Callable[[str], None]


@dataclasses.dataclass
class PlanResult:
    """Everything a plan found: ``data`` (an app's ``--plan-json``) and the line that ends it.

    Attributes
    ----------
    target, config : str
        The target as given and the run's name.
    data : dict
        ``target``, ``device``, ``devices``, ``config``, ``attention``, ``memory``, ``train``,
        ``estimate`` and ``eval``, as far as the plan got.
    error : str or None
        The one error line (a step that does not compile, or does not fit).
    """

    target: str
    config: str
    data: Record = dataclasses.field(default_factory=dict)
    error: str | None = None


def open_target(
    text: str,
    abstract_devices: Callable[..., list[jax.Device]],
    flag: str = "--plan",
    compilation_cache: str = "auto",
) -> Target:
    """The abstract devices of ``text`` (``"h100"``, ``"8xa100-40gb"``, ``"v5e"``), with the
    folder that keeps their compiles' findings (:class:`CompileFindings`).

    Parameters
    ----------
    text : str
        The target: a device table name, optionally with a power-of-two count.
    abstract_devices : callable
        ``(platform, topology, target_config=...) -> devices`` (tjx-parallel's
        ``abstract_devices``: the mesh library owns them).
    flag : str
        The command-line flag each error line starts with.
    compilation_cache : str
        The run's ``train.compilation_cache``: the findings go in its ``deviceless/`` folder
        (``auto``: tjx.kernels' default; ``off``: every plan compiles everything).

    Raises
    ------
    ValueError
        An unknown target or a bad count (the known ones listed).
    ImportError
        A package the target's compiler needs is missing (the ``pip install`` line).
    """
    try:
        device, count = parse_target(text)
    except ValueError as err:
        raise ValueError(f"{flag}: {err}") from None
    check_packages(device.platform, flag)
    use_cpu_platform()
    topology = device.topology(count)
    spec = gpu_target_config(device) if device.platform != "tpu" else ""
    with quiet_native_stderr():
        if device.platform == "tpu":
            found = abstract_devices("tpu", topology)
        else:
            found = abstract_devices("cuda", topology, target_config=spec)
    folder = compilation_cache_dir(None if compilation_cache == "auto" else compilation_cache)
    findings = None
    if folder is not None:  # the target's compiler is named by its entry, topology and spec
        key = target_key(device.key, device.device_kind, topology, str(count), spec)
        findings = CompileFindings(folder / "deviceless", key)
    # One chip of the smallest TPU slice libtpu builds (v5e:1x1 is refused): the first `count`.
    return Target(device, count, found[:count], findings)


def local_target(device: str | None = None) -> Target:
    """This machine's devices as a target, estimated as the table's entry for their kind (or
    ``device``'s).

    Raises
    ------
    ValueError
        The table has no entry for this device kind and ``device`` is not given, or ``device``
        is not in the table.
    """
    devices = jax.devices()
    kind = str(devices[0].device_kind)
    found = accelerator(device) if device else accelerator_of(kind)
    if found is None:
        raise ValueError(f"the device table has no entry for {kind!r}; pass device=")
    return Target(found, len(devices), devices)


def plan_report(
    name: str,
    target: Target,
    text: str,
    say: Say,
    *,
    choose: Callable[[Callable[[str], None], Say], str],
    with_kernel: Callable[[str], T],
    compile_step: Callable[[T, str, bool], Compiled],
    lighter: Callable[[T], Iterable[tuple[T, str]]],
    settings: dict[str, str],
    estimate_args: Callable[[T], Record],
    eval_rows: Callable[[T], int],
    programs: Callable[[T], list[tuple[str, Compiled]]] | None = None,
    flag: str = "--plan",
) -> PlanResult:
    """Compile, fit and estimate a run on ``target``, saying each finding (see module doc).

    Parameters
    ----------
    name, target, text
        The run's name, the target and the target as given (for the lines).
    say : callable
        Where the lines go.
    choose : callable
        ``choose(build, say)`` says and returns the attention kernel, calling ``build(kernel)``
        for each it tries (it raises on a failed compile; the step is kept for the plan).
    with_kernel : callable
        The run with a kernel.
    compile_step : callable
        ``compile_step(run, label, train)``: its train step (or eval step, ``train`` False)
        compiled for ``target``, a failure kept as the result's ``error`` (not raised).
    lighter : callable
        The memory fit's lighter runs of a run, in order, each with its change's name.
    settings : dict
        The fitted run's settings the ``train`` record keeps: each key's attribute path
        (``{"remat": "model.remat"}``).
    estimate_args : callable
        :func:`estimate`'s ``units``, ``unit``, ``model_flops`` and ``custom_call_cost`` of a run.
    eval_rows : callable
        A run's eval batch size, for the eval step's line.
    programs : callable, optional
        A run's other programs in place of its eval step (a GRPO run's rollout: generation's
        prefill and decode step), each (label, compiled for ``target``): each says its compile
        and peak, and one that does not compile or fit is the plan's error.
    flag : str
        The command-line flag the error lines start with.

    Returns
    -------
    PlanResult
    """
    result = PlanResult(text, name)
    data = result.data
    data.update(target=text, device=target.device.key, devices=target.count, config=name)
    say(
        f"plan: {name} on {target.describe()}, compiled without the device; nothing is "
        "trained, nothing written"
    )
    kernel, step, line = _chosen(choose, lambda k: compile_step(with_kernel(k), k, True), say)
    run = with_kernel(kernel)
    data["attention"] = {"kernel": kernel, "line": line}
    if step.error is not None and not step.out_of_memory:
        result.error = f"{flag} {text}: the train step does not compile: {step.error}"
        data["train"] = {"compiles": False, "error": step.error}
        say(f"train step: does not compile ({step.error})")
        return result
    if step.error is None:
        say(f"train step: compiles ({step.took})")
        if step.note:
            say(f"  note: {step.note}")
    else:
        say(f"train step: the compiler refuses it for memory ({step.error[:120]})")
    tries = ((r, functools.partial(compile_step, r, change, True)) for r, change in lighter(run))
    fitted, chosen, memory = fit_compiled(step, tries, target.device, say)
    fitted = run if fitted is None else fitted
    data["memory"] = memory
    if not memory["fits"]:
        result.error = does_not_fit(text, target, memory, flag)
    hlo = (chosen.compiled.as_text() if chosen.compiled is not None else "") or ""
    data["train"] = {
        "compiles": chosen.compiled is not None,
        "compile_s": chosen.seconds,
        "compiled_before": chosen.kept,  # read from the target's findings: compile_s is lowering
        "peak_bytes": chosen.peak,
        "changes": chosen.label,
        "f32_dots": f32_dots(hlo),
        "gemm_operands": gemm_operands(hlo),  # a float8 run's float8 GEMMs
        "note": chosen.note,
        **{key: operator.attrgetter(path)(fitted) for key, path in settings.items()},
    }
    if chosen.compiled is not None:
        args = estimate_args(fitted)
        data["estimate"] = estimate(hlo, target.device, target.count, say=say, **args)
        data["train"]["custom_calls"] = data["estimate"].pop("custom_calls")
    if programs is not None:
        _programs(result, programs(fitted), target, text, flag, say)
        return result
    evaluated = compile_step(fitted, "the eval step", False)
    if evaluated.error is not None:
        say(f"eval step: does not compile ({evaluated.error})")
        result.error = result.error or f"{flag} {text}: the eval step does not compile"
    else:
        assert evaluated.peak is not None
        say(
            f"eval step: compiles in {evaluated.took}; {evaluated.peak / GIB:.2f} GiB "
            f"per device for a batch of {eval_rows(fitted)}"
        )
    data["eval"] = {"compiles": evaluated.error is None, "peak_bytes": evaluated.peak}
    return result


def _programs(
    result: PlanResult,
    compiled: list[tuple[str, Compiled]],
    target: Target,
    text: str,
    flag: str,
    say: Say,
) -> None:
    """Each program's line and record (``data["programs"]``); the first that does not compile,
    or whose peak passes the device's memory, is the result's error."""
    budget, why = budget_bytes(target.device)
    records = result.data.setdefault("programs", {})
    for label, one in compiled:
        records[label] = {"compiles": one.error is None, "peak_bytes": one.peak}
        if one.error is not None:
            say(f"{label}: does not compile ({one.error})")
            result.error = result.error or f"{flag} {text}: the {label} does not compile"
            continue
        assert one.peak is not None
        say(f"{label}: compiles in {one.took}; {one.peak / GIB:.2f} GiB per device")
        if one.peak > budget:
            result.error = result.error or (
                f"{flag} {text}: the {label} needs {one.peak / GIB:.2f} GiB per device, more "
                f"than the {budget / GIB:.2f} GiB a step may use ({why}); lower "
                "data.batch_size or grpo.max_new_tokens"
            )


def _chosen(
    choose: Callable[[Callable[[str], None], Say], str],
    compile_kernel: Callable[[str], Compiled],
    say: Say,
) -> tuple[str, Compiled, str]:
    """The kernel ``choose`` takes, its compiled train step (each tried step kept: the chosen
    one is not compiled twice) and its lines joined."""
    lines: list[str] = []
    built: dict[str, Compiled] = {}

    def tell(line: str) -> None:
        lines.append(line)
        say(line)

    def build(kernel: str) -> None:
        built[kernel] = compile_kernel(kernel)
        if built[kernel].error is not None:
            raise RuntimeError(built[kernel].error)

    chosen = choose(build, tell)
    if chosen not in built:  # XLA, never built by a choice: compiled here
        built[chosen] = compile_kernel(chosen)
    return chosen, built[chosen], "; ".join(lines)


def does_not_fit(text: str, target: Target, memory: Record, flag: str = "--plan") -> str:
    """The error line of a step that does not fit ``target`` even with every lighter setting: by
    how much, what was tried, and the settings that shrink it (four times the devices, sharded).

    Parameters
    ----------
    text : str
        The target as given.
    target : Target
        The target.
    memory : dict
        :func:`fit_compiled`'s record.
    flag : str
        The command-line flag the line starts with.
    """
    budget = memory["budget_bytes"]
    peaks = [t["peak_bytes"] for t in memory["tried"] if t["peak_bytes"] is not None]
    over = f" by {(min(peaks) - budget) / GIB:.2f} GiB" if peaks else ""
    tried = ", ".join(t["change"] for t in memory["tried"][1:])
    return (
        f"{flag} {text}: the train step does not fit{over} per device"
        f"{f' even with {tried}' if tried else ''}; lower data.batch_size or data.seq_len, or "
        f"shard the parameters and optimizer state over more devices ({flag} "
        f"{4 * target.count}x{target.device.key} --set mesh.strategy=fsdp --set mesh.data=1 "
        "--set mesh.fsdp=-1)"
    )
