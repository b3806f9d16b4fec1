"""The sandboxed Jinja environment chat templates render in, as transformers builds it.

``ImmutableSandboxedEnvironment`` (no attribute of Python internals, no unsafe call, no mutation
of the inputs) with ``trim_blocks``, ``lstrip_blocks``, ``loopcontrols``, a ``{% generation %}``
tag that records where the assistant's text lands, and the globals templates expect:
``tojson`` (without HTML escaping), ``raise_exception``, ``strftime_now``, ``namespace`` (no
underscore names) and ``dict``. Inputs reach a template as plain JSON values only (`plain`).
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

__all__ = ["SPANS", "environment", "plain"]

Span = tuple[int, int]

#: The rendered blocks and generation spans of the render in progress (one per thread or task).
SPANS: contextvars.ContextVar[tuple[list[str], list[Span]] | None] = contextvars.ContextVar(
    "tjx_chat_spans", default=None
)


def plain(value: Any) -> Any:
    """The messages as plain JSON values (str, numbers, lists, dicts): nothing with methods that
    the sandbox does not know about reaches the template."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):  # subclasses (enums, numpy strings) carry methods of their own
        return str.__str__(value)
    if isinstance(value, int):  # IntEnum; bool cannot be subclassed
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item) and getattr(value, "shape", None) == ():
        return plain(item())
    return f"<{type(value).__name__}>"


_ENVIRONMENT: Any = None


def environment() -> Any:
    """The one sandboxed environment (made on first use: jinja2 is imported only for chat data)."""
    global _ENVIRONMENT
    if _ENVIRONMENT is None:
        _ENVIRONMENT = _make_environment()
    return _ENVIRONMENT


def _make_environment() -> Any:
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(jinja2.ext.Extension):
        """``{% generation %}...{% endgeneration %}``: records where its text lands."""

        tags = {"generation"}  # noqa: RUF012 - jinja2.ext.Extension declares it so

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            call = self.call_method("_mark", [], [], None, None)
            return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

        def _mark(self, caller: Any) -> str:
            text = str(caller())
            active = SPANS.get()
            if active is not None:
                blocks, spans = active
                start = sum(len(b) for b in blocks)  # what the template has yielded so far
                spans.append((start, start + len(text)))
            return text

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(
        x: Any,
        ensure_ascii: bool = False,
        indent: int | None = None,
        separators: Any = None,
        sort_keys: bool = False,
    ) -> str:
        # Jinja's own tojson escapes HTML characters, which would change the rendered prompt.
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    def strftime_now(fmt: str) -> str:
        return datetime.now().strftime(fmt)

    class Namespace(jinja2.utils.Namespace):
        """``namespace(...)`` that refuses underscore names (no route to CPython internals)."""

        def __init__(*args: Any, **kwargs: Any) -> None:
            self, rest = args[0], args[1:]
            attrs = dict(*rest, **kwargs)
            for name in attrs:
                Namespace._check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name: str, value: Any) -> None:
            Namespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name: Any) -> None:
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(
                    f"a namespace attribute may not start with '_' (got {name!r})"
                )

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[Generation, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["namespace"] = Namespace
    env.globals["dict"] = _TemplateDict()
    return env


class _TemplateDict:
    """``dict(...)`` and ``dict.fromkeys(...)`` for templates, without the type itself (whose
    attributes would lead out of the sandbox)."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict.fromkeys(*args, **kwargs)
