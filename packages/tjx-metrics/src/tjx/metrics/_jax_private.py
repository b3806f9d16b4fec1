"""The one private JAX API tjx-metrics uses, guarded: an HLO module proto printed as HLO text.

A GPU profile (XProf's ``xplane.pb``) carries the optimized HLO of every program it ran as a
serialized ``HloModuleProto``; the calibration fit (:mod:`tjx.metrics.calibration_fit`) prices
its kernels from that text, so the measured kernels match the priced ones by name. JAX has no
public API that prints a module proto: ``jax._src.lib.xla_client`` does. If a JAX release moves
it, :func:`hlo_text_of_proto` raises an ``ImportError`` that says to pass the compiled HLO text
(``compiled.as_text()`` of the same step) instead.
"""

from __future__ import annotations

__all__ = ["hlo_text_of_proto"]


def hlo_text_of_proto(module_proto: bytes) -> str:
    """The HLO text (``compiled.as_text()``'s format) of a serialized ``HloModuleProto``.

    Raises
    ------
    ImportError
        This JAX has no ``xla_client.XlaComputation`` (pass the compiled HLO text instead).
    """
    try:
        from jax._src.lib import xla_client  # the only printer of a module proto
    except ImportError as err:  # pragma: no cover - depends on the JAX release
        raise ImportError(
            "this JAX cannot print the profile's HLO proto; pass the step's compiled HLO text "
            "(compiled.as_text()) to the fit instead"
        ) from err
    computation = xla_client.XlaComputation(module_proto)
    return str(computation.get_hlo_module().to_string())
