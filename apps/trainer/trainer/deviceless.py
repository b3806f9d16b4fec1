"""The devices of a ``--plan TARGET`` that is not here: abstract GPUs or TPU chips to compile for.

``TARGET`` is a name of tjx-metrics' device table (``h100``, ``a100-40gb``, ``v5e``...), optionally
with a count (``8xh100``: one host of eight). A GPU needs jax's CUDA plugin (with cuDNN and the
CUDA compiler's ``ptxas``), a TPU libtpu: both from PyPI, in the same versions as the installed
jax. Neither needs the device: with JAX on its CPU platform, the plugin builds XLA's real
compiler for the target from its device spec (tjx-metrics ships XLA's own, trimmed), and
tjx-parallel hands back the slice's abstract devices. A missing package is one line saying what
to install. The native libraries' start-up chatter on stderr (libtpu's missing-metadata warnings,
the CUDA stub's "no driver") is kept out of the plan's few lines.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from trainer.schema import ConfigError


@dataclass(frozen=True)
class Target:
    """A planned device and how many of them.

    Attributes
    ----------
    device : tjx.metrics.Accelerator
        The device table's entry.
    count : int
        Devices in the mesh.
    devices : list
        Abstract ``jax.Device`` objects (``count`` of them).
    """

    device: Any
    count: int
    devices: list[Any]

    @property
    def kernel_target(self) -> tuple[str, str, tuple[int, int] | None]:
        """``tjx.kernels.target(...)`` arguments: the platform kernels are chosen for."""
        d = self.device
        return ("gpu" if d.platform == "gpu" else d.platform), d.device_kind, d.compute_capability

    def describe(self) -> str:
        """``"8 × H100 SXM (NVIDIA H100 80GB HBM3)"``."""
        return f"{self.count} × {self.device.name} ({self.device.device_kind})"


def _find(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package that is not there
        return False


def check_packages(platform: str, flag: str = "--plan") -> None:
    """One `ConfigError` line naming what to install for ``platform`` (``"gpu"``/``"tpu"``).

    The versions are the installed jax's: the plugin must match it exactly.
    """
    import jax

    version = jax.__version__
    if platform == "tpu":
        if not _find("libtpu"):
            raise ConfigError(
                f"{flag}: a TPU plan needs libtpu (no TPU needed); pip install "
                f"'jax[tpu]=={version}' (libtpu from PyPI)"
            )
        return
    wanted = {
        "jax_cuda12_plugin": f"jax-cuda12-plugin=={version}",
        "jax_plugins.xla_cuda12": f"jax-cuda12-pjrt=={version}",
        "nvidia.cudnn": "nvidia-cudnn-cu12",
    }
    missing = [pip for module, pip in wanted.items() if not _find(module)]
    if not _find("nvidia.cuda_nvcc") and shutil.which("ptxas") is None:
        missing.append("nvidia-cuda-nvcc-cu12")  # ptxas: PTX to GPU code
    if missing:
        raise ConfigError(
            f"{flag}: a GPU plan needs jax's CUDA plugin (no GPU needed); pip install "
            f"{' '.join(repr(m) if '=' in m else m for m in missing)}"
        )


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Send what native code writes to file descriptor 2 to a scratch file while inside (Python's
    own ``sys.stderr`` is flushed first; the trainer's lines go to stdout)."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as scratch:
        os.dup2(scratch.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def use_cpu_platform() -> None:
    """JAX on its CPU platform (the plugins' topologies need it; no accelerator is touched)."""
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    jax.config.update("jax_platforms", "cpu")


def open_target(text: str, flag: str = "--plan") -> Target:
    """The abstract devices of ``text`` (``"h100"``, ``"8xa100-40gb"``, ``"v5e"``).

    Raises
    ------
    ConfigError
        An unknown target (the known ones listed), a count that is not a power of two, or a
        missing package (what to install).
    """
    from tjx import metrics, parallel

    try:
        device, count = metrics.parse_target(text)
    except ValueError as err:
        raise ConfigError(f"{flag}: {err}") from None
    check_packages(device.platform, flag)
    use_cpu_platform()
    topology = device.topology(count)
    with quiet_native_stderr():
        if device.platform == "tpu":
            found = parallel.abstract_devices("tpu", topology)
        else:
            config = metrics.gpu_target_config(device)
            found = parallel.abstract_devices("cuda", topology, target_config=config)
    # One chip of the smallest TPU slice libtpu builds (v5e:1x1 is refused): the first `count`.
    return Target(device, count, found[:count])
