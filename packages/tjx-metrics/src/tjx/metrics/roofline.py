"""An estimated step time from a compiled program's optimized HLO: a per-kernel roofline.

Every kernel the program launches (a fusion, a custom call, a copy, a collective, an unfused op)
gets its FLOPs and the bytes it reads and writes in device memory; its time is

    max(Σ_dtype matmul FLOPs / the device's peak for that dtype, bytes / HBM bandwidth)

(a collective: max(bytes on the wire / link bandwidth, its memory traffic / HBM bandwidth)),
and the step's estimate is the sum over kernels, a while loop's body counted times its trip
count. The rules that keep the bytes honest:

* an operand a kernel only slices (``slice``, ``dynamic-slice``, a ``gather``'s table) counts the
  slices it reads, not the whole array (one layer's weights out of a scanned stack);
* an in-place update (``dynamic-update-slice``, ``scatter`` into a parameter that is the
  kernel's output) counts the update, not the buffer it is written into;
* bitcasts, tuples and fusions of nothing but bitcasts move no data; a TPU's on-chip memory
  (memory space 1, VMEM) is not device memory;
* a while loop's trip count is XLA's ``known_trip_count`` where the compiler states it (GPU), else
  read from the loop's condition (``i < N`` with a constant start and step: what a TPU program
  leaves implicit, and why a TPU's ``cost_analysis()`` counts a scanned body once);
* a ``conditional`` counts its most expensive branch, unless exactly one branch's work is under
  ``jax.named_scope(LIKELY_BRANCH)`` (``"likely_branch"``): the program's own word for the branch
  that runs on the data it is built for (tjx-kernels' packed cuDNN attention marks its packed
  branch; the dense-mask fallback runs only on unusual batches). A note says what the most
  expensive branch would add;
* cuDNN attention counts the FLOPs it computes (forward 4·b·h·s_q·s_k·d, backward 10·b·h·s_q·
  s_k·d, halved when causal: it skips masked tiles) and its operands and results as bytes;
  other custom calls are costed by ``custom_call_cost`` (the caller's kernels: a Triton kernel's
  grid says what it reads) or else count their operands and results, flagged ``unpriced``.

What it leaves out (it is an estimate, and says so): kernel launch overhead and the idle gaps
between kernels, tiles that are not tuned (a deviceless compile cannot autotune), caches (L2
reuse makes real traffic lower), overlap of collectives with compute (summed here, not hidden),
elementwise and transcendental FLOPs (memory-bound on these devices), and a kernel that reaches
neither roof. Compare it with a measurement whenever a device is lent.
"""

from __future__ import annotations

from dataclasses import dataclass

from tjx.metrics.accelerators import Accelerator
from tjx.metrics.hlo import Computation, HloModule, Instruction, parse_hlo
from tjx.metrics.hlo_loops import trip_count
from tjx.metrics.kernel_cost import CustomCost, Kernel, KernelCosts, is_free

__all__ = ["LIKELY_BRANCH", "Roofline", "roofline"]


@dataclass(frozen=True)
class Roofline:
    """The program's estimate: its kernels and their sums (see the module docstring).

    Attributes
    ----------
    device : Accelerator
        The device it is estimated for.
    kernels : tuple of Kernel
        Every kernel, once, with its launch count.
    notes : tuple of str
        What the estimate had to guess (a loop with no trip count, a conditional's branch).
    """

    device: Accelerator
    kernels: tuple[Kernel, ...]
    notes: tuple[str, ...] = ()

    @property
    def seconds(self) -> float:
        """Estimated step time (sum over kernels)."""
        return sum(k.total_seconds for k in self.kernels)

    @property
    def flops(self) -> float:
        """Matmul FLOPs the program does (recomputation included)."""
        return sum(k.total_flops for k in self.kernels)

    @property
    def bytes(self) -> float:
        """Device-memory bytes read and written by all kernels."""
        return sum(k.total_bytes for k in self.kernels)

    @property
    def launches(self) -> int:
        """Kernel launches per step."""
        return sum(k.count for k in self.kernels)

    @property
    def collectives(self) -> tuple[Kernel, ...]:
        """The collectives, most expensive first."""
        found = [k for k in self.kernels if k.kind == "collective"]
        return tuple(sorted(found, key=lambda k: -k.total_seconds))

    def top(self, n: int = 10) -> list[Kernel]:
        """The ``n`` kernels with the largest total estimated time."""
        return sorted(self.kernels, key=lambda k: -k.total_seconds)[:n]

    def by_kind(self) -> dict[str, dict[str, float]]:
        """Seconds, bytes, FLOPs and launches summed per kernel kind, slowest kind first."""
        out: dict[str, dict[str, float]] = {}
        for k in self.kernels:
            row = out.setdefault(k.kind, {"seconds": 0.0, "bytes": 0.0, "flops": 0.0, "count": 0})
            row["seconds"] += k.total_seconds
            row["bytes"] += k.total_bytes
            row["flops"] += k.total_flops
            row["count"] += k.count
        return dict(sorted(out.items(), key=lambda kv: -kv[1]["seconds"]))

    def mfu(self, model_flops: float, devices: int = 1) -> float:
        """Estimated MFU: ``model_flops`` (per step, all devices) over the estimated time at the
        device's bf16 peak."""
        return model_flops / (self.seconds * self.device.peak.bf16 * devices)


#: A ``jax.named_scope`` that marks a conditional's branch as the one that runs on the data the
#: program is built for; the estimate counts that branch instead of the most expensive one.
LIKELY_BRANCH = "likely_branch"


class _Walker:
    """Walks the program from its entry: loops times their trip counts, every kernel priced."""

    def __init__(self, module: HloModule, device: Accelerator, custom: CustomCost | None):
        self.module, self.device, self.custom = module, device, custom
        self.costs = KernelCosts(module, device, custom)
        self.kernels: dict[str, Kernel] = {}
        self.notes: list[str] = []
        #: conditionals counted as their likely branch, and what their worst branches would add
        self.likely_branches, self.likely_extra_ms = 0, 0.0

    def walk(self, comp: Computation, count: int) -> None:
        for ins in comp.instructions:
            op = ins.opcode
            if is_free(op):
                continue
            if op == "while":
                trips = self.trip_count(comp, ins)
                self.walk(self.module.computations[ins.called("body") or ""], count * trips)
                # The condition runs before every iteration and once more to end the loop.
                self.walk(
                    self.module.computations[ins.called("condition") or ""], count * (trips + 1)
                )
            elif op == "call":
                self.walk(self.module.computations[ins.called("to_apply") or ""], count)
            elif op == "conditional":
                self.branch(ins, count)
            elif op == "async-start" and not self.costs.collective_inside(ins):
                self.walk(self.module.computations[ins.called("calls") or ""], count)
            else:
                self.add(self.costs.kernel(comp, ins), count)

    def add(self, kernel: Kernel, count: int) -> None:
        seen = self.kernels.get(kernel.name)
        if seen is not None:
            count += seen.count
        self.kernels[kernel.name] = Kernel(**{**kernel.__dict__, "count": count})

    def branch(self, ins: Instruction, count: int) -> None:
        names = ins.attr_list("branch_computations") or [
            n for n in (ins.called("true_computation"), ins.called("false_computation")) if n
        ]
        costs = []
        for name in names:
            sub = _Walker(self.module, self.device, self.custom)
            sub.walk(self.module.computations[name], 1)
            costs.append(sub)
        if not costs:
            return
        seconds = [sum(k.total_seconds for k in w.kernels.values()) for w in costs]
        worst = max(range(len(costs)), key=lambda i: seconds[i])
        marked = [i for i, name in enumerate(names) if self.likely(name)]
        if len(marked) == 1:
            # The program says which branch runs on the data it is built for (a packed batch
            # takes cuDNN's packed layout; the dense mask is a fallback): count that one, and
            # say what the worst branch would add.
            chosen = marked[0]
            self.likely_branches += 1
            self.likely_extra_ms += (seconds[worst] - seconds[chosen]) * count * 1e3
        else:
            chosen = worst
            self.notes.append(f"{ins.name}: conditional counted as its most expensive branch")
        for k in costs[chosen].kernels.values():
            self.add(k, k.count * count)

    def likely(self, name: str) -> bool:
        """Whether a branch computation's work is under a ``jax.named_scope(LIKELY_BRANCH)``."""
        comp = self.module.computations[name]
        marker = f"/{LIKELY_BRANCH}/"
        return any(marker in ins.attrs.get("metadata", "") for ins in comp.instructions)

    def trip_count(self, comp: Computation, ins: Instruction) -> int:
        found = trip_count(self.module, comp, ins)
        if found is None:
            self.notes.append(f"{ins.name}: while loop with no known trip count, counted once")
            return 1
        return found


def roofline(
    hlo: str | HloModule,
    device: Accelerator,
    *,
    custom_call_cost: CustomCost | None = None,
) -> Roofline:
    """The per-kernel roofline of an optimized HLO program (see the module docstring).

    Parameters
    ----------
    hlo : str or HloModule
        ``compiled.as_text()`` of the step (after XLA's passes: the kernels the device runs).
    device : Accelerator
        Peaks, HBM bandwidth and link bandwidth (``tjx.metrics.accelerator("h100")``).
    custom_call_cost : callable, optional
        ``(CustomCall) -> (flops by dtype, bytes read, bytes written)`` for custom calls this
        module cannot price (a caller's Triton kernels); ``None`` from it means unknown.

    Returns
    -------
    Roofline
        Every kernel with its launch count and estimate; ``.seconds``, ``.bytes``, ``.flops``.
    """
    module = parse_hlo(hlo) if isinstance(hlo, str) else hlo
    walker = _Walker(module, device, custom_call_cost)
    walker.walk(module.entry_computation, 1)
    kernels = tuple(k for k in walker.kernels.values() if k.kind != "view")
    unpriced = sorted({k.detail for k in kernels if not k.priced})
    notes = list(walker.notes)
    if walker.likely_branches:
        notes.append(
            f"{walker.likely_branches} conditional(s) counted as their branch marked "
            f"{LIKELY_BRANCH!r}; their most expensive branches would add "
            f"{walker.likely_extra_ms:.2f} ms"
        )
    if unpriced:
        notes.append(f"custom calls counted by their operands and results: {', '.join(unpriced)}")
    return Roofline(device, kernels, tuple(notes))
