"""The jax internals tjx-parallel uses (``tjx.parallel.internals``, its one module that touches
them) are still where it reads them: a jax upgrade that moves one fails here, naming the symbol,
not in a user's multi-host run. This is also the only test that touches jax's private state."""

from __future__ import annotations

import importlib
import pathlib

import pytest

from tjx.parallel import internals

PACKAGE = pathlib.Path(internals.__file__).parent


@pytest.mark.parametrize("symbol", sorted(internals.PRIVATE))
def test_each_private_symbol_is_where_tjx_reads_it(symbol: str) -> None:
    module, _, name = symbol.rpartition(".")
    try:
        value = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        pytest.fail(f"jax moved {symbol}, which tjx.parallel.internals uses: {err}")
    for attribute in internals.PRIVATE[symbol]:
        assert hasattr(value, attribute), f"jax's {symbol} has no {attribute!r} any more"
    assert internals.private(symbol) is value


def test_a_moved_symbol_is_one_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(internals.PRIVATE, "jax._src.distributed.no_such_state", ())
    with pytest.raises(RuntimeError, match=r"jax's private jax._src.distributed.no_such_state"):
        internals.private("jax._src.distributed.no_such_state")
    monkeypatch.setitem(internals.PRIVATE, "jax._src.distributed.global_state", ("gone",))
    with pytest.raises(RuntimeError, match=r"global_state .*'gone'.*, which jax 0\.\d+"):
        internals.runtime_client("x")


def test_no_other_module_touches_jax_internals() -> None:
    for path in PACKAGE.glob("*.py"):
        text = path.read_text()
        if path.name != "internals.py":
            assert "_src" not in text and "jaxlib" not in text, path.name


def test_the_runtime_client_and_the_joined_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    from jax._src import distributed

    state = distributed.global_state
    monkeypatch.setattr(state, "client", None)
    with pytest.raises(RuntimeError, match=r"^barrier: jax.distributed is not initialised"):
        internals.runtime_client("barrier")
    client = object()
    monkeypatch.setattr(state, "client", client)
    monkeypatch.setattr(state, "process_id", 1)
    monkeypatch.setattr(state, "num_processes", 2)
    monkeypatch.setattr(state, "coordinator_address", "h:5")
    assert internals.runtime_client("x") == (client, 1, 2)
    assert internals.joined_setup() == ("h:5", 2, 1)


def test_the_cpp_log_level_is_jaxlibs(monkeypatch: pytest.MonkeyPatch) -> None:
    import jaxlib.utils

    levels: list[int] = []
    monkeypatch.setattr(jaxlib.utils, "absl_set_min_log_level", levels.append)
    internals.set_cpp_log_level(1000)
    assert levels == [1000]
