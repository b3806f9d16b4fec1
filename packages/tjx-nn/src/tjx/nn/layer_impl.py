"""The ``impl`` setting of a layer that tokamax can run (``norm.impl``, ``mlp.impl``): one
definition of its choices, default and rule (:mod:`tjx.kernels.layer_kernels`), each section
naming only its layer and tokamax's kernel for it."""

from __future__ import annotations

from typing import Any

from tjx.core.fields import setting
from tjx.kernels.layer_kernels import LAYER_IMPLEMENTATIONS


def layer_impl_setting(layer: str, kernel: str) -> Any:
    """The resumable ``impl`` field of a section whose ``layer`` tokamax's ``kernel`` can run:
    ``auto`` (the default), ``xla`` or ``tokamax`` (`LAYER_IMPLEMENTATIONS`).

    Parameters
    ----------
    layer : str
        What the setting chooses the runner of, as its help says it (``"the model-wide norms"``).
    kernel : str
        tokamax's kernel for it (``"Triton"``, ``"Mosaic GPU"``).

    Returns
    -------
    dataclasses.Field
        The field (`tjx.core.fields.setting`), opt-in: ``auto`` takes tokamax only where a GPU
        measured it faster.
    """
    return setting(
        "auto",
        choices=LAYER_IMPLEMENTATIONS,
        resumable=True,
        help=f"who runs {layer}: xla (tjx's), tokamax (its {kernel} kernel, opt-in); auto: "
        "tokamax only where a GPU measured it faster (the launch table), else xla",
    )
