"""What one kernel of a compiled program costs: its matmul FLOPs by dtype and the bytes it moves.

The rules are :mod:`tjx.metrics.roofline`'s (see there): a kernel's time is the slower of its
FLOPs at the device's peak for their dtype and its device-memory bytes at the HBM bandwidth (a
collective's: its bytes on the wire at the link bandwidth); sliced operands count their slices,
in-place updates their update; cuDNN attention counts what it computes; a caller's own custom
calls are priced by its ``custom_call_cost``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from tjx.metrics.accelerators import Accelerator
from tjx.metrics.hlo import Array, Computation, HloModule, Instruction, json_config
from tjx.metrics.op_flops import convolution_flops, cudnn_flops, gemm_flops

__all__ = ["CustomCall", "CustomCost", "Kernel", "KernelCosts", "is_free"]

#: Instructions that launch nothing (views, bookkeeping); nor does any ``*-done`` or
#: ``*-update`` (the second half of an asynchronous pair, counted at its ``*-start``).
_FREE = {
    "parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all",
    "partition-id", "replica-id", "opt-barrier", "add-dependency", "domain",
    "get-dimension-size",
}  # fmt: skip
_COLLECTIVES = {
    "all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute",
    "ragged-all-to-all", "collective-broadcast",
}  # fmt: skip
#: What reads part of an operand (the bytes are the result's).
_SLICING = {"slice", "dynamic-slice", "gather"}
#: What writes into its first operand in place (the bytes are the update's).
_IN_PLACE = {"dynamic-update-slice": 1, "scatter": 2}
_VIEW = {"bitcast", "reshape", "get-tuple-element"}
#: Custom calls that launch nothing (a TPU's scoped buffer allocation).
_NO_KERNEL = {"AllocateBuffer", "ConcatBitcast"}


@dataclass(frozen=True)
class CustomCall:
    """What a custom call's cost function is given (for a caller's own kernels).

    Attributes
    ----------
    target : str
        ``custom_call_target`` (``"__gpu$xla.gpu.triton"``...).
    kernel : str or None
        A Triton kernel's ``name`` (``"tjx_flash_fwd"``), else None.
    grid : tuple of int
        A Triton kernel's launch grid (x, y, z); ``(1, 1, 1)`` when not stated.
    operands, results : tuple of Array
        Shapes of the operands and of the results.
    op_name : str
        The call's ``metadata={op_name=...}`` (unescaped; empty when the HLO names none): what a
        library's kernel without a Triton name says of itself (tokamax writes its op, config
        and arguments there as JSON).
    """

    target: str
    kernel: str | None
    grid: tuple[int, int, int]
    operands: tuple[Array, ...]
    results: tuple[Array, ...]
    op_name: str = ""


#: ``custom_call_cost(call) -> (flops by dtype, bytes read, bytes written)`` or None (unknown);
#: a fourth element, when given, names the kernel in the estimate (its ``detail``), and a name
#: that says "attention" prices it as attention (the fitted attention class), e.g. another
#: library's flash kernel whose custom call target alone says nothing (``mosaic_gpu_v2``).
CustomCost = Callable[
    [CustomCall],
    "tuple[dict[str, float], float, float] | tuple[dict[str, float], float, float, str] | None",
]
_OP_NAME = re.compile(r'\bop_name="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Kernel:
    """One kernel of the program and its estimate (per launch; ``count`` launches per step).

    Attributes
    ----------
    name : str
        The HLO instruction (``gemm_fusion_dot.21``).
    kind : str
        ``"matmul"``, ``"attention"``, ``"loop fusion"``, ``"reduction fusion"``,
        ``"triton fusion"``, ``"custom fusion"``, ``"copy"``, ``"collective"``, ``"custom call"``,
        or an unfused op's opcode.
    detail : str
        The custom call target, fusion kind or collective opcode.
    count : int
        Launches per step (the product of enclosing loops' trip counts).
    flops : dict of str to float
        Matmul FLOPs by operand dtype (``"bf16"``, ``"f32@highest"``...).
    bytes_read, bytes_written : float
        Device-memory bytes per launch.
    wire_bytes : float
        Bytes one device sends to its peers per launch (collectives).
    seconds : float
        Estimated time per launch.
    priced : bool
        False for a custom call whose cost is only its operands and results.
    """

    name: str
    kind: str
    detail: str
    count: int
    flops: dict[str, float]
    bytes_read: float
    bytes_written: float
    wire_bytes: float
    seconds: float
    priced: bool = True

    @property
    def total_seconds(self) -> float:
        """Time of all its launches in a step."""
        return self.seconds * self.count

    @property
    def total_bytes(self) -> float:
        """Bytes read and written by all its launches."""
        return (self.bytes_read + self.bytes_written) * self.count

    @property
    def total_flops(self) -> float:
        """Matmul FLOPs of all its launches."""
        return sum(self.flops.values()) * self.count


def is_free(opcode: str) -> bool:
    """Whether an instruction launches nothing (a view, bookkeeping, an async pair's end)."""
    return opcode in _FREE or opcode.endswith(("-done", "-update"))


def _hbm(array: Array, tpu: bool) -> float:
    """Bytes of ``array`` that live in device memory (a TPU's VMEM, space 1, does not)."""
    if array.memory_space == 0 or (not tpu and array.memory_space == 1):
        return array.bytes
    return 0.0


class KernelCosts:
    """Prices single kernels of ``module`` on ``device`` (:meth:`kernel`)."""

    def __init__(self, module: HloModule, device: Accelerator, custom: CustomCost | None):
        self.module, self.device, self.custom = module, device, custom
        self.tpu = device.platform == "tpu"

    def collective_inside(self, ins: Instruction) -> bool:
        """Whether an ``async-start`` wraps a collective."""
        inner = self.module.computations.get(ins.called("calls") or "")
        return inner is not None and _base(inner.root.opcode) in _COLLECTIVES

    def kernel(self, comp: Computation, ins: Instruction) -> Kernel:
        op = _base(ins.opcode)
        if op in _COLLECTIVES or (ins.opcode == "async-start" and self.collective_inside(ins)):
            return self.collective(comp, ins)
        if ins.opcode == "fusion":
            return self.fusion(comp, ins)
        if ins.opcode == "fusion-start" and len(ins.shape) >= 2:
            # An asynchronous fusion (newer XLA's dynamic slices): its shape is (operands...,
            # result, context); the kernel is the called fusion producing that result.
            fused = dataclasses.replace(ins, opcode="fusion", shape=(ins.shape[-2],))
            kernel = self.fusion(comp, fused)
            return dataclasses.replace(kernel, detail="fusion-start")
        if ins.opcode == "custom-call":
            return self.custom_call(comp, ins)
        operands = [self._shape(comp, o) for o in ins.operands]
        read = sum(_hbm(a, self.tpu) for shape in operands for a in shape)
        written = sum(_hbm(a, self.tpu) for a in ins.shape)
        flops = self.op_flops(comp, ins)
        if ins.opcode == "copy-start":  # (destination, source, context): the copy itself
            written = _hbm(ins.shape[0], self.tpu) if ins.shape else 0.0
        elif op in _SLICING:
            read = written
        elif op in _IN_PLACE:
            update = operands[_IN_PLACE[op]]
            read = written = sum(_hbm(a, self.tpu) for a in update)
        kind = "copy" if op in ("copy", "copy-start") else ("matmul" if flops else op)
        return self.priced(ins.name, kind, ins.opcode, flops, read, written)

    def priced(
        self,
        name: str,
        kind: str,
        detail: str,
        flops: dict[str, float],
        read: float,
        written: float,
        wire: float = 0.0,
        priced: bool = True,
    ) -> Kernel:
        compute = 0.0
        for key, value in flops.items():
            dtype, _, precision = key.partition("@")
            compute += value / self.device.matmul_peak(dtype, precision or "default")
        memory = (read + written) / self.device.hbm_bandwidth
        network = wire / self.device.link_bandwidth
        seconds = max(compute, memory, network)
        return Kernel(name, kind, detail, 1, flops, read, written, wire, seconds, priced)

    def fusion(self, comp: Computation, ins: Instruction) -> Kernel:
        inner = self.module.computations[ins.called("calls") or ""]
        config = json_config(ins.attrs.get("backend_config", "")).get("fusion_backend_config", {})
        backend_kind = str(config.get("kind", ""))
        if all(i.opcode in _FREE | {"bitcast", "reshape"} for i in inner.instructions):
            return Kernel(ins.name, "view", backend_kind, 1, {}, 0.0, 0.0, 0.0, 0.0)
        read = 0.0
        for index, param in inner.parameters().items():
            operand = self._shape(comp, ins.operands[index]) if index < len(ins.operands) else ()
            full = sum(_hbm(a, self.tpu) for a in operand)
            read += min(full, self.param_read(inner, param, full))
        written = self.outputs_written(inner, ins)
        flops = self.computation_flops(inner)
        gathered = [i for i in inner.instructions if _base(i.opcode) in _COLLECTIVES]
        if gathered:  # a TPU fuses a collective with its neighbours (its matmul too): one kernel
            parts = [self.collective(inner, i) for i in gathered]
            detail = " + ".join(p.detail for p in parts)
            wire = sum(p.wire_bytes for p in parts)
            return self.priced(ins.name, "collective", detail, flops, read, written, wire)
        kind = {"kLoop": "loop fusion", "kInput": "reduction fusion", "kOutput": "output fusion"}
        label = kind.get(ins.attrs.get("kind", ""), "fusion")
        if backend_kind == "__triton":
            label = "triton fusion"
        elif backend_kind == "__custom_fusion":
            label = "custom fusion"
        if flops:
            label = "matmul"
        detail = backend_kind or ins.attrs.get("kind", "")
        return self.priced(ins.name, label, detail, flops, read, written)

    def param_read(self, comp: Computation, param: Instruction, full: float) -> float:
        """Bytes a fused computation reads of one parameter (see the module's rules)."""
        users = comp.users()
        total, stack, seen = 0.0, [param], set()
        while stack:
            node = stack.pop()
            for user in users.get(node.name, []):
                if (user.name, node.name) in seen:
                    continue
                seen.add((user.name, node.name))
                op = user.opcode
                first = bool(user.operands) and user.operands[0] == node.name
                if op in _VIEW:
                    stack.append(user)
                elif op in _SLICING and first:
                    total += sum(_hbm(a, self.tpu) for a in user.shape)
                elif op in _IN_PLACE and first and user.operands.count(node.name) == 1:
                    continue  # the buffer an update is written into is not read
                elif op == "fusion":  # a nested fusion: what it reads of that operand
                    nested = self.module.computations[user.called("calls") or ""]
                    for i, name in enumerate(user.operands):
                        if name == node.name and i in nested.parameters():
                            total += self.param_read(nested, nested.parameters()[i], full)
                else:
                    return full
        return total

    def outputs_written(self, inner: Computation, ins: Instruction) -> float:
        root = inner.root
        outputs = (
            [inner.by_name[o] for o in root.operands if o in inner.by_name]
            if root.opcode == "tuple"
            else [root]
        )
        written = 0.0
        for i, out in enumerate(outputs):
            while out.opcode in ("bitcast", "reshape") and out.operands[0] in inner.by_name:
                out = inner.by_name[out.operands[0]]
            if out.opcode in _IN_PLACE:
                update = self._shape(inner, out.operands[_IN_PLACE[out.opcode]])
                written += sum(_hbm(a, self.tpu) for a in update)
            elif root.opcode == "tuple" and i < len(ins.shape):
                written += _hbm(ins.shape[i], self.tpu)
            else:
                written += sum(_hbm(a, self.tpu) for a in ins.shape)
        return written

    def computation_flops(self, comp: Computation) -> dict[str, float]:
        flops: dict[str, float] = {}
        for ins in comp.instructions:
            for key, value in self.op_flops(comp, ins).items():
                flops[key] = flops.get(key, 0.0) + value
            if ins.opcode == "fusion":
                nested = self.computation_flops(self.module.computations[ins.called("calls") or ""])
                for key, value in nested.items():
                    flops[key] = flops.get(key, 0.0) + value
        return flops

    def op_flops(self, comp: Computation, ins: Instruction) -> dict[str, float]:
        """Matmul FLOPs of a ``dot`` or ``convolution`` (a TPU's dots are convolutions)."""
        if ins.opcode not in ("dot", "convolution") or not ins.shape:
            return {}
        lhs, rhs = (self._shape(comp, o) for o in ins.operands[:2])
        if not lhs or not rhs:
            return {}
        precision = re.findall(r"highest|high", ins.attrs.get("operand_precision", ""))
        key = lhs[0].dtype + (f"@{precision[0]}" if precision else "")
        if ins.opcode == "dot":
            dims = [int(d) for d in re.findall(r"\d+", ins.attrs.get("lhs_contracting_dims", ""))]
            inner = math.prod(lhs[0].dims[d] for d in dims)
            return {key: 2.0 * ins.shape[0].elements * inner}
        return {key: convolution_flops(ins, lhs[0], rhs[0])}

    def custom_call(self, comp: Computation, ins: Instruction) -> Kernel:
        target = ins.attrs.get("custom_call_target", "").strip('"')
        operands = tuple(a for o in ins.operands for a in self._shape(comp, o))
        results = ins.shape
        read = sum(_hbm(a, self.tpu) for a in operands)
        written = sum(_hbm(a, self.tpu) for a in results)
        config = ins.attrs.get("backend_config", "")
        if target.startswith("__cudnn$fmha"):
            return self.priced(
                ins.name, "attention", target, cudnn_flops(config, operands), read, written
            )
        if target.startswith("__cublas"):
            return self.priced(ins.name, "matmul", target, gemm_flops(config, operands, results),
                               read, written)  # fmt: skip
        name = re.search(r'\bname = "([^"]*)"', config)
        grid = tuple(
            int(g.group(1)) if g else 1
            for g in (re.search(rf"\bgrid_{a} = (\d+)", config) for a in "xyz")
        )
        op_name = _OP_NAME.search(ins.attrs.get("metadata", ""))
        said = re.sub(r"\\(.)", r"\1", op_name.group(1)) if op_name else ""
        kernel = name.group(1) if name else None
        call = CustomCall(target, kernel, grid, operands, results, said)  # type: ignore[arg-type]
        if target in _NO_KERNEL:
            return Kernel(ins.name, "view", target, 1, {}, 0.0, 0.0, 0.0, 0.0)
        cost = self.custom(call) if self.custom is not None else None
        label = call.kernel or target
        if cost is None:
            return self.priced(ins.name, "custom call", label, {}, read, written, priced=False)
        flops, read, written = cost[:3]
        if len(cost) == 4:  # the cost function named the kernel (type alias above)
            label = cost[3]  # type: ignore[misc]
        kind = "attention" if "flash" in label or "attention" in label else "custom call"
        return self.priced(ins.name, kind, label, flops, read, written)

    def collective(self, comp: Computation, ins: Instruction) -> Kernel:
        inner, where = ins, comp
        if ins.opcode == "async-start":
            where = self.module.computations[ins.called("calls") or ""]
            inner = where.root
        op = _base(inner.opcode)
        arrays = [a for o in inner.operands for a in self._shape(where, o)]
        # The wire carries the data wherever it sits (a TPU may send from VMEM); device memory
        # counts only what lives there.
        size = sum(a.bytes for a in arrays)
        local = sum(_hbm(a, self.tpu) for a in arrays)
        n = _group_size(inner, self.module.num_partitions)
        share = (n - 1) / n if n > 1 else 0.0
        # Per device: what it reads, writes, and sends to its peers (a ring's bytes on the wire).
        scale = {"all-gather": float(n), "reduce-scatter": 1 / n}.get(op, 1.0)
        wire = {
            "all-reduce": 2 * share * size,
            "all-gather": share * size * n,
            "collective-permute": size if n > 1 else 0.0,
        }.get(op, share * size)
        name, detail = ins.name, f"{op} over {n}"
        return self.priced(name, "collective", detail, {}, local, local * scale, wire)

    def _shape(self, comp: Computation, name: str) -> tuple[Array, ...]:
        found = comp.by_name.get(name)
        return found.shape if found is not None else ()


def _base(opcode: str) -> str:
    return opcode[: -len("-start")] if opcode.endswith("-start") else opcode


def _group_size(ins: Instruction, partitions: int) -> int:
    """Devices per group of a collective's ``replica_groups`` (all of them when empty)."""
    groups = ins.attrs.get("replica_groups", "")
    named = re.match(r"mesh\[([^\]]*)\]\s*\{([^}]*)\}", groups)  # mesh['a'=4,'b'=2] {'a'}
    if named:
        sizes = {k: int(v) for k, v in re.findall(r"'([^']+)'=(\d+)", named.group(1))}
        return math.prod(sizes.get(axis, 1) for axis in re.findall(r"'([^']+)'", named.group(2)))
    iota = re.match(r"\[(\d+(?:,\d+)*)\]<=", groups)
    if iota:
        return int(iota.group(1).split(",")[-1])
    first = re.match(r"\{\{([^}]*)\}", groups)
    if first:
        return len([x for x in first.group(1).split(",") if x.strip()])
    pairs = ins.attrs.get("source_target_pairs")
    if pairs:
        return len(set(re.findall(r"\d+", pairs)))
    return max(partitions, 1)
