"""How far a reader walks: to the trainer's first train step, or from a setting to where it acts.

Three modes, all on ``--config tiny`` (shrunk, on a small local text) run in this process with a
profile hook. Run them in ``tools/devtest``'s environment (PYTHONPATH over the source roots,
``JAX_PLATFORMS=cpu``); the checkout on PYTHONPATH is the one walked, so any revision can be.

**No argument: the trainer to its first train step.** Every call of a named function of the
``trainer`` package (tests, module and class bodies, lambdas and comprehensions excluded) until the
step function ``train_step`` is first called. It keeps each function's first call only (a reader
reads a function once, where it is first called), collapses consecutive functions of one file, and
prints the files in walk order, the number of distinct files and the number of *returns*: entries
into a file already visited (the reader turns back to a file seen earlier).

**``--setting KEY``: one setting from the command line to where it acts** (``KEY`` one of
`TARGETS`: ``train.steps`` ends at ``Training.loop``, which reads it; ``model.attention_impl`` at
``tjx.kernels.attention``, where the model's attention layer calls the kernel it was built with,
not where the name is resolved). The rule, which follows the setting's *value* and nothing else:

1. The run's command line sets every walked setting to a value of its own (`WALK_VALUES`:
   ``train.steps=4321``, a number nothing else in the run holds; ``model.attention_impl=xla``),
   whichever settings are walked, so that one walk's numbers do not depend on the others; the
   run has one CPU device (a simulated device count in ``XLA_FLAGS`` is dropped), whichever
   environment walks it.
2. An object *carries* the setting when, searching it at most `DEPTH` (3) steps deep through
   mapping values, list/tuple/set items (the first `WIDTH` of each) and the attributes of objects
   whose class is the checkout's own (``trainer``, ``tjx``) or a dataclass or namespace, one finds
   the command-line word (``train.steps=4321``), its text (``"4321"``) or its parsed value (the
   int ``4321``; a bool never counts as an int). The list of words (``argv``) and the section
   (``cfg.train``) carry it at depth 1, the config at 2 (``cfg.train.steps``), an object holding
   the config at 3 (``self.cfg.train.steps``). Arrays, jax's, flax's and other libraries' objects
   are not entered. (Depth 2 gives the same walks on 36c8b56 and 27107ce; depth 4 too, but for
   one call more of ``model.attention_impl``'s on 27107ce.)
3. The *scope* is the named functions (as in the first mode) of the trainer app
   (``apps/trainer/trainer``) and of every package (``packages/*/src/tjx``), tests excluded.
4. A function is *on the walk* when one of its calls, from ``cli.main`` until the first call of
   the target, has a frame that holds a carrier: among its arguments when it is called, among its
   locals or its return value when it returns, or among its locals when the target is reached (the
   functions still running then are the way to the target). Calls made while a module of the
   checkout is imported are not the run's (a class body's ``setting()`` default, a tuple of
   allowed values) and do not count. The target itself ends the walk. Each function counts once,
   at the first of its calls whose frame carries the setting.
5. The walk's functions, in the order of those calls, give its files; consecutive functions of one
   file are one *call* (the reader goes into that file once), a *return* is a call into a file
   already visited, so ``calls = files + returns``.

The run stops at the first call of ``Training.loop`` at the latest; a target not called by then is
an error (a moved or renamed target: update `TARGETS`).

It prints the files in walk order (a return marked) and ``walk KEY: N files, C calls, R returns``;
``--functions`` also prints each function of a walk (``file:qualname`` and what made it carry) on
stderr. Several ``--setting`` flags walk in one run (the same run as each alone, by 1.).

**``--first-step``: the whole walk, from the command line to the first train step.** Every named
function in the scope of 3. (the trainer app and every package) called from ``cli.main`` until
the first call of `FIRST_STEP` (``Training._step``, the call that runs step 1), whatever it
carries; calls made while a module of the checkout is imported do not count (as in 4.), each
function counts once, at its first call, and files, calls and returns are counted as in 5. It
runs the run of 1. (with ``--setting`` flags, the same run: the setting walks' numbers do not
change) and prints ``walk first step: N files, C calls, R returns``. Its run goes past
``Training.loop``; it stops at `PAST_FIRST_STEP` (the first step's log) at the latest, an error
when the first step's call was not seen (a moved or renamed ``_step``: update `FIRST_STEP`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from inspect import CO_NEWLOCALS
from itertools import islice
from pathlib import Path
from types import CodeType, FrameType, SimpleNamespace
from typing import Any

SETS = [
    "model.d_model=16",
    "model.num_layers=1",
    "model.num_heads=2",
    "model.mlp.dim=32",
    "model.max_seq_len=16",
    "data.seq_len=16",
    "data.batch_size=8",
    "eval.batch_size=8",
    "train.steps=1",
    "optimizer.schedule.warmup_steps=0",
    "train.eval_batches=1",
    "sampling.max_new_tokens=2",
    "logging.sinks=[jsonl]",
    "logging.progress=false",
]

#: Where each walkable setting acts: (the file's path from the checkout's root, the function's
#: qualified name). Its first call ends the walk. The attention kernel's setting acts where the
#: kernel runs: the `tjx.kernels` entry the model's attention calls (its first call is the first
#: trace of the train step, in the kernel choice's or the memory fit's compile).
TARGETS: dict[str, tuple[str, str]] = {
    "train.steps": ("apps/trainer/trainer/loop/training.py", "Training.loop"),
    "model.attention_impl": ("packages/tjx-kernels/src/tjx/kernels/dispatch.py", "attention"),
}
#: The whole walk's end (``--first-step``): the call that runs a run's first train step.
FIRST_STEP = ("apps/trainer/trainer/loop/training.py", "Training._step")
#: The whole walk's name in its summary line (``walk first step: ...``).
FIRST_STEP_KEY = "first step"
#: Called as a step's log is written, inside `FIRST_STEP`: the whole walk's run stops here at the
#: latest, so that a renamed ``_step`` is an error after one step, not after 4321.
PAST_FIRST_STEP = ("apps/trainer/trainer/loop/step_log.py", "StepLog.step")
#: The training loop: every setting walk ends there at the latest (its steps are not walked), so
#: that a target the run no longer calls is an error at once, not after 4321 steps.
LAST = TARGETS["train.steps"]
#: The value each walked setting is given on the command line (rule 1 of the module docstring):
#: one that nothing else in the run holds, so that finding it is finding the setting. The run
#: stops at ``Training.loop``, before its first step, so 4321 steps cost nothing.
WALK_VALUES: dict[str, str] = {"train.steps": "4321", "model.attention_impl": "xla"}
#: How deep a frame's objects are searched for the setting (rule 2).
DEPTH = 3
#: Items of one list or mapping searched at most: the setting sits near the top of what carries
#: it, and a model's parameter lists are long.
WIDTH = 64
#: Classes whose attributes are searched although no checkout module defines them.
OPEN_CLASSES = (argparse.Namespace, SimpleNamespace)


class StepReachedError(Exception):
    """Raised at the first call of the train step."""


class WalksDoneError(BaseException):
    """Raised when every walk reached its target: a BaseException, so that no ``except
    Exception`` of the run (a fallback, a retry) takes it for the run's own error."""


def walk(argv: list[str]) -> list[str]:
    """The trainer files entered (consecutive repeats collapsed) until ``train_step`` runs."""
    import trainer

    root = Path(trainer.__file__).resolve().parent  # the checkout on PYTHONPATH: any revision
    seen: list[str] = []
    read: set[Any] = set()

    def hook(frame: FrameType, event: str, arg: Any) -> None:
        code = frame.f_code
        # Named functions only: a class body runs at import, a lambda or comprehension is read
        # as part of the function that holds it.
        if event != "call" or code.co_name.startswith("<") or not code.co_flags & CO_NEWLOCALS:
            return
        path = Path(code.co_filename)
        if root not in path.parents or "tests" in path.parts:
            return
        name = path.name
        if code.co_name == "train_step" and name == "train_step.py":
            raise StepReachedError
        if code in read:
            return
        read.add(code)
        if "--functions" in sys.argv:
            print(f"{name}:{code.co_name}", file=sys.stderr)
        if not seen or seen[-1] != name:
            seen.append(name)

    from trainer.cli import main

    sys.setprofile(hook)
    try:
        main(argv)
    except StepReachedError:
        pass
    finally:
        sys.setprofile(None)
    return seen


class Carrier:
    """Finds a setting's value in a frame's objects (rule 2 of the module docstring)."""

    def __init__(self, key: str, text: str, own: tuple[str, ...]) -> None:
        self.word = f"{key}={text}"
        self.text = text
        self.value: object = int(text) if text.lstrip("-").isdigit() else text
        self.own = own  # the module prefixes whose classes are searched

    def _is_value(self, obj: object) -> bool:
        if isinstance(obj, str):
            return obj in (self.word, self.text)
        return not isinstance(obj, bool) and isinstance(obj, type(self.value)) and obj == self.value

    def _children(self, obj: object) -> list[object]:
        if isinstance(obj, Mapping):
            return list(islice(obj.values(), WIDTH))
        if isinstance(obj, list | tuple | set | frozenset):
            return list(islice(obj, WIDTH))
        cls = type(obj)
        if not (
            isinstance(obj, OPEN_CLASSES)
            or dataclasses.is_dataclass(obj)
            or cls.__module__.split(".")[0] in self.own
        ):
            return []
        attrs = dict(getattr(obj, "__dict__", {}))
        for name in getattr(cls, "__slots__", ()):
            if hasattr(obj, name):
                attrs[name] = getattr(obj, name)
        return list(islice(attrs.values(), WIDTH))

    def find(self, objects: list[object]) -> bool:
        """Whether the value is among ``objects`` or within `DEPTH` steps of one of them."""
        level, seen = objects, set[int]()
        for depth in range(DEPTH + 1):
            following: list[object] = []
            for obj in level:
                if id(obj) in seen or isinstance(obj, type):
                    continue
                seen.add(id(obj))
                if self._is_value(obj):
                    return True
                if depth < DEPTH:
                    try:
                        following += self._children(obj)
                    except Exception:  # an object whose attributes cannot be read carries nothing
                        continue
            level = following
        return False


@dataclass
class SettingWalk:
    """One setting's walk: its functions in call order, until its target is first called. With
    no carrier, the whole walk (``--first-step``): every function called counts."""

    key: str
    target: tuple[str, str]
    carrier: Carrier | None
    done: bool = False
    found: dict[CodeType, tuple[int, str]] = field(default_factory=dict)  # code -> (order, why)

    def add(self, code: CodeType, order: int, why: str) -> None:
        """Count ``code`` at ``order`` unless counted at an earlier call."""
        if code not in self.found or self.found[code][0] > order:
            self.found[code] = (order, why)

    def functions(self, root: Path) -> list[tuple[str, str, str]]:
        """(file from the checkout's root, qualified name, why) in walk order."""
        ordered = sorted(self.found.items(), key=lambda item: item[1][0])
        return [
            (Path(code.co_filename).relative_to(root).as_posix(), code.co_qualname, why)
            for code, (_, why) in ordered
        ]


def files_of(functions: list[tuple[str, str, str]]) -> list[str]:
    """The files entered, consecutive repeats collapsed (rule 5)."""
    entered: list[str] = []
    for path, _, _ in functions:
        if not entered or entered[-1] != path:
            entered.append(path)
    return entered


def scope_of(root: Path) -> tuple[Path, ...]:
    """The source folders walked (rule 3): the trainer app's and every package's ``tjx``."""
    return (root / "apps/trainer/trainer", *sorted(root.glob("packages/*/src/tjx")))


def walk_settings(
    argv: list[str], keys: list[str], first_step: bool = False
) -> tuple[Path, list[SettingWalk]]:
    """Run ``trainer.cli.main(argv)`` until every setting of ``keys`` reached its target (and,
    with ``first_step``, the whole walk reached `FIRST_STEP`).

    Returns the checkout's root and one `SettingWalk` per key (in ``keys``' order), then the
    whole walk's (key `FIRST_STEP_KEY`, no carrier) with ``first_step``; raises ``RuntimeError``
    naming a walk whose target the run never reached.
    """
    import trainer

    # Not resolved: the code objects name their files as imported (a sandbox may link them).
    root = Path(trainer.__file__).absolute().parents[3]  # apps/trainer/trainer/__init__.py
    folders = tuple(str(folder) + "/" for folder in scope_of(root))
    own = ("trainer", "tjx")
    walks = [SettingWalk(k, TARGETS[k], Carrier(k, WALK_VALUES[k], own)) for k in keys]
    settings = list(walks)
    if first_step:
        walks.append(SettingWalk(FIRST_STEP_KEY, FIRST_STEP, None))
    in_scope: dict[str, bool] = {}
    where_of: dict[CodeType, tuple[str, str]] = {}  # code -> (file from the root, qualname)
    calls = [0]  # the order of calls in scope
    order_of: dict[int, int] = {}  # id(frame) -> its call's order, while the frame runs

    def scoped(code: CodeType) -> bool:
        name = code.co_filename
        if name not in in_scope:
            in_scope[name] = name.startswith(folders) and "/tests/" not in name
        return in_scope[name]

    def importing(frame: FrameType) -> bool:
        # A call made while a module of the checkout is imported (its module and class bodies
        # define things: ``setting()``'s defaults, a choice's allowed values) is no part of the
        # run the reader follows.
        caller: FrameType | None = frame
        while caller is not None:
            if caller.f_code.co_name == "<module>" and scoped(caller.f_code):
                return True
            caller = caller.f_back
        return False

    def carries(walk_: SettingWalk, frame: FrameType, objects: list[object]) -> bool:
        found = walk_.carrier is None or walk_.carrier.find(objects)
        return found and not importing(frame)

    def reach_target(walk_: SettingWalk, frame: FrameType, order: int) -> None:
        # The functions still running are the way to the target: they count if they hold a
        # carrier now (rule 4), at the order of their own call.
        walk_.add(frame.f_code, order, "target")
        caller = frame.f_back
        while caller is not None:
            code = caller.f_code
            running = scoped(code) and id(caller) in order_of and code not in walk_.found
            if running and (
                walk_.carrier is None or walk_.carrier.find(list(caller.f_locals.values()))
            ):
                walk_.add(code, order_of[id(caller)], "running")
            caller = caller.f_back
        walk_.done = True

    def hook(frame: FrameType, event: str, arg: Any) -> None:
        code = frame.f_code
        if event not in ("call", "return") or not code.co_flags & CO_NEWLOCALS:
            return
        if code.co_name.startswith("<") or not scoped(code):
            return
        if event == "return":
            order = order_of.pop(id(frame), None)
            if order is None:
                return
            for walk_ in walks:
                open_ = not walk_.done and code not in walk_.found
                if open_ and carries(walk_, frame, [*frame.f_locals.values(), arg]):
                    walk_.add(code, order, "returns")
            return
        calls[0] += 1
        order_of[id(frame)] = calls[0]
        if code not in where_of:
            where_of[code] = (Path(code.co_filename).relative_to(root).as_posix(), code.co_qualname)
        where = where_of[code]
        for walk_ in walks:
            if walk_.done:
                continue
            if where == walk_.target:
                reach_target(walk_, frame, calls[0])
            elif code not in walk_.found and carries(walk_, frame, list(frame.f_locals.values())):
                walk_.add(code, calls[0], "called")
        if all(walk_.done for walk_ in walks) or where == PAST_FIRST_STEP:
            raise WalksDoneError
        if where == LAST and not (first_step and all(walk_.done for walk_ in settings)):
            raise WalksDoneError  # a setting walk not done here never will be: an error below

    from trainer.cli import main

    sys.setprofile(hook)
    try:
        main(argv)
    except WalksDoneError:
        pass
    finally:
        sys.setprofile(None)
    for walk_ in walks:
        if not walk_.done:
            path, name = walk_.target
            end = "its first step's log" if walk_.carrier is None else "the training loop"
            raise RuntimeError(
                f"walk {walk_.key}: the run reached {end} without calling {path}:{name}"
            )
    return root, walks


def report(root: Path, walk_: SettingWalk, functions: bool = False) -> str:
    """The walk's files in order (returns marked) and its summary line, as printed."""
    found = walk_.functions(root)
    if functions:
        for path, name, why in found:
            print(f"{walk_.key}: {path}:{name} ({why})", file=sys.stderr)
    files, lines = files_of(found), [f"{walk_.key}: the command line -> {':'.join(walk_.target)}"]
    for i, path in enumerate(files):
        lines.append(f"  {i + 1:3d} {path}" + ("  (return)" if path in files[:i] else ""))
    lines.append(summary(walk_.key, files))
    return "\n".join(lines)


def summary(key: str, files: list[str]) -> str:
    """``walk KEY: N files, C calls, R returns`` of a walk's entered files."""
    distinct = len(set(files))
    return f"walk {key}: {distinct} files, {len(files)} calls, {len(files) - distinct} returns"


def run_argv(tmp: str, sets: list[str]) -> list[str]:
    """``--config tiny`` shrunk by ``sets``, on a small text written under ``tmp``."""
    text = Path(tmp) / "corpus.txt"
    text.write_text("".join(f"Line {i}: to be or not to be.\n" for i in range(200)))
    argv = ["--config", "tiny", "--run-dir", f"{tmp}/run", "--data", str(text)]
    for item in [*sets, f"data.cache_dir={tmp}/cache"]:
        argv += ["--set", item]
    return argv


def walk_sets() -> list[str]:
    """`SETS` with every walkable setting at its `WALK_VALUES` value (rule 1)."""
    kept = [item for item in SETS if item.split("=", 1)[0] not in WALK_VALUES]
    return kept + [f"{key}={value}" for key, value in WALK_VALUES.items()]


def one_device() -> None:
    """Walk the run of one CPU device (rule 1): drop a simulated device count from ``XLA_FLAGS``
    (tools/devtest's and the tests' 8), which would send the run through the mesh's code."""
    if "jax" in sys.modules:
        raise RuntimeError("trainer_walk: a setting walk needs a process that has not imported jax")
    flags = os.environ.get("XLA_FLAGS", "").split()
    kept = [flag for flag in flags if not flag.startswith("--xla_force_host_platform_device_count")]
    os.environ["XLA_FLAGS"] = " ".join(kept)


def main(args: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="KEY",
        help=f"walk this setting to where it acts: {', '.join(TARGETS)} (repeatable)",
    )
    parser.add_argument(
        "--first-step",
        action="store_true",
        help="walk every function from the command line to the first train step",
    )
    parser.add_argument("--functions", action="store_true", help="print each function, on stderr")
    opts = parser.parse_args(sys.argv[1:] if args is None else args)
    unknown = [key for key in opts.setting if key not in TARGETS]
    if unknown:
        print(
            f"trainer_walk: --setting {unknown[0]} cannot be walked; use one of "
            f"{', '.join(TARGETS)}",
            file=sys.stderr,
        )
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        if not opts.setting and not opts.first_step:
            files = walk(run_argv(tmp, SETS))
            print(" -> ".join(files))
            distinct = len(set(files))
            print(f"{distinct} files; {len(files)} entries; {len(files) - distinct} returns")
            return 0
        keys = list(dict.fromkeys(opts.setting))
        one_device()
        try:
            root, walks = walk_settings(run_argv(tmp, walk_sets()), keys, opts.first_step)
        except RuntimeError as err:  # a target the run does not reach: one line, not a traceback
            print(f"trainer_walk: {err}", file=sys.stderr)
            return 1
    for walk_ in walks:
        print(report(root, walk_, opts.functions))
    return 0


if __name__ == "__main__":
    sys.exit(main())
