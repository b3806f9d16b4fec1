"""How many times a compiled program's while loop runs, read from its HLO.

XLA states a loop's trip count in the while's ``backend_config`` (``known_trip_count``) on a GPU;
a TPU program leaves it implicit (one reason a TPU's ``cost_analysis()`` counts a scanned body
once). Then it is read from the loop itself: the condition's ``i < limit`` (or ``<=``, ``!=``;
a GPU may fuse that compare into a kernel), the start from the loop's initial tuple and the step
from the body's ``i + step`` (copies of the constants followed, as a TPU makes them).
"""

from __future__ import annotations

from tjx.metrics.hlo import Computation, HloModule, Instruction, json_config

__all__ = ["trip_count"]


def trip_count(module: HloModule, comp: Computation, ins: Instruction) -> int | None:
    """Iterations of the while loop ``ins`` (an instruction of ``comp``); None when unknown."""
    known = json_config(ins.attrs.get("backend_config", "")).get("known_trip_count", {})
    if "n" in known:
        return int(known["n"])
    return _implicit_trip_count(module, comp, ins)


def _implicit_trip_count(module: HloModule, comp: Computation, ins: Instruction) -> int | None:
    """``for i in range(start, limit, step)`` read from the loop: the condition's ``i < limit``
    (or ``<=``, ``!=``; a GPU fuses it into one kernel), ``start`` from the loop's initial tuple and
    ``step`` from the body's update of ``i``."""
    cond = module.computations.get(ins.called("condition") or "")
    body = module.computations.get(ins.called("body") or "")
    if cond is None or body is None:
        return None
    compare, where, outer = cond.root, cond, cond
    if compare.opcode == "fusion":  # the compare inside, its parameters the fusion's operands
        where = module.computations.get(compare.called("calls") or "", cond)
        outer_operands, compare = compare.operands, where.root
    if compare.opcode != "compare":
        return None
    index = limit = None
    for name in compare.operands:
        node = where.by_name.get(name)
        if node is not None and node.opcode == "parameter" and where is not cond:
            node = outer.by_name.get(outer_operands[int(node.attrs.get("_literal", "0"))])
        if node is None:
            return None
        if node.opcode == "get-tuple-element":
            index = int(node.attrs.get("index", "-1"))
        else:
            limit = _constant(outer if node.name in outer.by_name else where, node.name)
    if index is None or limit is None:
        return None
    start = _tuple_constant(comp, ins.operands[0] if ins.operands else "", index)
    step = _body_step(module, body, index)
    if start is None or step is None or step <= 0:
        return None
    direction = compare.attrs.get("direction", "")
    span = limit - start + (1 if direction == "LE" else 0)
    return max(0, -(-span // step)) if direction in ("LT", "LE", "NE") else None


def _int_literal(node: Instruction) -> int | None:
    try:
        return int(node.attrs.get("_literal", ""))
    except ValueError:
        return None


def _tuple_constant(comp: Computation, name: str, index: int) -> int | None:
    node = comp.by_name.get(name)
    if node is None or node.opcode != "tuple" or index >= len(node.operands):
        return None
    return _constant(comp, node.operands[index])


def _constant(comp: Computation, name: str) -> int | None:
    """The integer a value is, following copies (a TPU copies the loop's start into place)."""
    node = comp.by_name.get(name)
    while node is not None and node.opcode in ("copy", "bitcast") and node.operands:
        node = comp.by_name.get(node.operands[0])
    return _int_literal(node) if node is not None and node.opcode == "constant" else None


def _body_step(module: HloModule, body: Computation, index: int) -> int | None:
    root = body.root
    if root.opcode != "tuple" or index >= len(root.operands):
        return None
    update, where = body.by_name.get(root.operands[index]), body
    if update is not None and update.opcode == "fusion":  # a GPU fuses `i + 1` into a kernel
        where = module.computations.get(update.called("calls") or "", body)
        update = where.root
    if update is None or update.opcode != "add":
        return None
    steps = [_constant(where, name) for name in update.operands]
    return next((step for step in steps if step is not None), None)
