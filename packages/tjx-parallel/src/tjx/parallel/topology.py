"""Devices of a GPU or TPU slice that is not here, for compiling against it (deviceless).

``jax.experimental.topologies`` describes a slice from its name alone: a TPU's with libtpu
(``"v5e:2x4"``), a GPU host's with jax's CUDA plugin and XLA's device spec (a
``GpuTargetConfig`` text, ``"1x1x8"``: one host of eight). Its devices are abstract: a
:func:`tjx.parallel.make_mesh` over them and ``jax.jit(f).lower(<ShapeDtypeStructs sharded on
that mesh>).compile()`` run the target's real compiler on this machine, so the program, its
memory and its collectives are the ones the slice would run. Nothing can execute on them.

Both need ``JAX_PLATFORMS=cpu`` (or ``jax.config.update("jax_platforms", "cpu")``) before the
first backend starts: the CUDA plugin's own start-up would look for a GPU and fail.

libtpu keeps a machine-wide lock (``/tmp/libtpu_lockfile``) so that two processes never drive
the same chips; a topology touches no chip, yet its first load takes the lock, and a second
process describing a slice at the same time (a search's second worker, two plans, two CI batches)
fails with "ABORTED: Internal error when accessing libtpu multi-process lockfile". So a TPU
topology is described with ``ALLOW_MULTIPLE_LIBTPU_LOAD=1`` (libtpu's own switch for that case),
unless the environment already sets it.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["abstract_devices"]


def abstract_devices(
    platform: str, topology: str, *, target_config: str | None = None
) -> list[Any]:
    """The devices of a slice described by name (see the module docstring).

    Parameters
    ----------
    platform : str
        ``"tpu"`` or ``"cuda"``.
    topology : str
        A TPU's ``"<kind>:<shape>"`` (``"v5e:2x2"``) or a GPU's ``"<slices>x<hosts>x<devices>"``.
    target_config : str, optional
        A GPU's ``GpuTargetConfig`` textproto (required for ``"cuda"``).

    Returns
    -------
    list
        Abstract ``jax.Device`` objects with the slice's ``device_kind`` and ids.

    Raises
    ------
    ValueError
        ``platform`` is neither, or ``"cuda"`` without ``target_config``; jax's own errors (a
        plugin that is not installed, a topology it refuses) pass through.
    """
    from jax.experimental import topologies

    if platform == "tpu":
        os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # no chip is driven: no lock
        desc = topologies.get_topology_desc(topology_name=topology, platform="tpu")
    elif platform == "cuda":
        if not target_config:
            raise ValueError("abstract_devices: a CUDA topology needs target_config")
        desc = topologies.get_topology_desc(
            platform="cuda", target_config=target_config, topology=topology
        )
    else:
        raise ValueError(f"abstract_devices: platform must be 'tpu' or 'cuda'; got {platform!r}")
    return list(desc.devices)
