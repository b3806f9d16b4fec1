"""Every seed claim a study tests, and its verdict on the study's rows.

Each study's report ends with a verdict table: the claim quoted with its seed file's name
(``/work/shared/seeds/`` when these were written; the name is the file's), what tjx measured with
its error bar, and *agrees*, *disagrees* or *cannot tell at this scale*, with one sentence why. A
difference within the combined noise of the seeds (`experiments.stats`) never decides a verdict.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from experiments.spec import Row
from experiments.stats import aggregate, difference, tied_with_best, value_text

AGREES, DISAGREES, CANNOT_TELL = "agrees", "disagrees", "cannot tell at this scale"
#: A judge's answer: (what tjx measured, verdict, one sentence why).
Judgement = tuple[str, str, str]
S000, S001, S002, S003, S004 = (
    "000_75d3ead00067a132.txt",
    "001_3df46873e7c00f4c.txt",
    "002_f125b3456d4996a3.txt",
    "003_182ce336b816df93.txt",
    "004_c76e9556c6206bec.txt",
)


@dataclass(frozen=True)
class Claim:
    """A seed's claim, quoted, and the judge that weighs it against a study's rows."""

    seed: str
    quote: str
    judge: Callable[[list[Row]], Judgement]

    def verdict(self, rows: list[Row]) -> Judgement:
        """The judge's answer; a study without the rows it needs cannot tell."""
        try:
            return self.judge(rows)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
            return "—", CANNOT_TELL, f"this run lacks the rows the claim needs ({err})."


def row(rows: list[Row], label: str) -> Row:
    """The row of ``label`` (KeyError if the study did not run it)."""
    for r in rows:
        if r["label"] == label:
            return r
    raise KeyError(label)


def lower(a: Row, b: Row, key: str, what: str, fmt: str = ".4f") -> Judgement:
    """Is ``a`` measurably lower than ``b`` in ``key``? agrees / disagrees (measurably higher) /
    cannot tell (within the noise)."""
    d = difference(a, b, key)
    measured = f"{a['label']} − {b['label']}: {d.words(fmt)}"
    if not math.isfinite(d.diff):
        return measured, CANNOT_TELL, "one of the two has no finite value."
    if not d.measurable:
        return measured, CANNOT_TELL, f"the difference in {what} is within the seeds' noise."
    if d.diff < 0:
        return measured, AGREES, f"{a['label']} is lower in {what} by more than the noise."
    return measured, DISAGREES, f"{a['label']} is higher in {what} by more than the noise."


def within(value: float, noise: float, bound: float) -> str:
    """agrees when ``|value| + noise < bound``, disagrees when ``|value| − noise > bound``."""
    if abs(value) + noise < bound:
        return AGREES
    if abs(value) - noise > bound:
        return DISAGREES
    return CANNOT_TELL


def failed(r: Row) -> bool:
    """A config that diverged or blew up in any seed."""
    return r.get("diverged_at") is not None or r.get("blew_up_at") is not None


def failure_words(r: Row) -> str:
    """How a `failed` config failed: ``diverged in 3/3 seeds (first at step 15)`` or ``blew up
    in 2/3 seeds (first at step 6)``."""
    key = "diverged_at" if r.get("diverged_at") is not None else "blew_up_at"
    verb = "diverged" if key == "diverged_at" else "blew up"
    return f"{verb} in {seeds_note(r, key)} (first at step {r[key]})"


def seeds_note(r: Row, key: str) -> str:
    """``2/3 seeds`` of a failure key."""
    return f"{r.get(key + '_seeds', 1)}/{r.get('seeds', 1)} seeds"


def cannot_on_cpu(what: str) -> Judgement:
    return ("—", CANNOT_TELL, f"{what} is a GPU figure; on this CPU bf16 is emulated.")


def by_side(rows: list[Row], side: str) -> Row:
    """The side-by-side study's seed rows of one side folded into one (mean ± std)."""
    return {**aggregate([r for r in rows if r["group"] == side]), "label": side}


def best_tie(rows: list[Row], label: str, key: str = "val_loss") -> tuple[bool, Row]:
    """(whether ``label`` is not measurably worse than the best of ``rows``, the best)."""
    tied = tied_with_best(rows, key)
    top = min(tied, key=lambda r: float(r[key]))
    return any(r["label"] == label for r in tied), top


def ratio_text(r: Row, key: str) -> str:
    return value_text(r, key, ".0f")
