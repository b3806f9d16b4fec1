"""How a tjx command shows Python's warnings: one line each, in the command's own voice.

Python prints a warning as ``/path/to/module.py:169: UserWarning: <message>`` and then the source
line that raised it: two lines a developer reads, noise in a run's terminal. The apps run their
commands inside `warning_lines`, which prints the same warning as ``trainer: warning: <message>``.
Which warnings are shown stays Python's (the ``-W`` option, ``PYTHONWARNINGS``, each library's
filters): only how a shown one looks changes.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterator
from typing import Any, TextIO

__all__ = ["warning_line", "warning_lines"]


def warning_line(prog: str, message: Warning | str) -> str:
    """``"<prog>: warning: <message>"``, the message's lines joined into one."""
    text = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    return f"{prog}: warning: {text}"


@contextlib.contextmanager
def warning_lines(prog: str, stream: TextIO | None = None) -> Iterator[None]:
    """Show each Python warning raised in the ``with`` block as one `warning_line`.

    Parameters
    ----------
    prog : str
        The command's name, the line's prefix (``trainer``, ``eval``).
    stream : TextIO, optional
        Where the lines go (default: ``sys.stderr`` at the time of the warning, so a caller that
        redirects stderr gets them).

    Notes
    -----
    Only ``warnings.showwarning`` changes, and it is put back when the block ends; the filters
    are left alone (a library that adds one while the block runs keeps it). A block nested inside
    that shows a kind of warning its own way (tjx.ckpt's ``corrupt_fallback_lines``) hands the
    others on to this one.
    """

    def show(message: Warning | str, category: type[Warning], *args: Any, **kw: Any) -> None:
        out = stream if stream is not None else sys.stderr
        print(warning_line(prog, message), file=out, flush=True)

    shown = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown
