"""Gemma 4's option section of a model config (`Gemma4Options`, ``model.gemma4``): its layer
switches, each off by default. A *global* layer is one without a window (``layer_windows``'
None); decoders only.

* ``global_head_dim``, ``global_kv_heads``: the global layers' head width and key/value heads
  (their q/k norms that wide); None: ``head_dim``, ``num_kv_heads``.
* ``global_values_from_keys`` (``attention_k_eq_v``): the global layers have no value
  projection; their values are the key projection's output (before the key's norm and RoPE).
* ``global_rope_proportion`` (proportional RoPE): the global layers turn only the first
  ``int(p · head_dim / 2)`` frequency pairs of a head (frequencies of the whole head, dim ``i``
  with ``i + head_dim/2`` as everywhere); the other pairs keep frequency 0, i.e. pass through.
* ``value_norm``: values go through an RMSNorm without a scale, per head.
* ``kv_shared_layers``: the last k layers have no key/value projections (nor cache): each attends
  to the keys and values of the last earlier layer of its kind (global or windowed), as computed
  by that layer (its cache while decoding). ``kv_shared_mlp_dim``: those layers' MLP width.
* ``per_layer_input_dim`` (PLE, width P): a second token table ``[per_layer_vocab_size, L·P]``
  (× ``sqrt(P)``) and a projection of the scaled embeddings ``[d, L·P]`` (× ``1/sqrt(d)``,
  RMS-normed per layer) are averaged (× ``1/sqrt 2``) into one P-vector per layer and token; after
  its MLP, layer ``i`` adds ``norm(W_up(gelu_tanh(W_gate h) · ple_i))`` to its residual.
* ``layer_scale``: each layer's output (residual included) times a learned scalar (``[1]``).

The section checks its own values when built; `check_model` what it needs of the rest of the
model. The shared layers read these switches through :mod:`tjx.nn.family_config`'s
``layer_shape`` (what one layer is), so they name no family. Of tjx.nn this module imports
only :mod:`tjx.nn.config_keys` (which imports none): the model config imports it without the
family's layers.
"""

# `setting()` returns dataclasses.field objects (with the metadata apps read).
# ruff: noqa: RUF009
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from tjx.core.fields import setting
from tjx.nn.config_keys import setting_value

__all__ = ["FLAT_GEMMA4_KEYS", "UNSCANNED", "Gemma4Options", "check_model", "kv_source"]

#: The switches that give layers parameters of different shapes: a scanned stack (one shape for
#: every layer) cannot hold them.
UNSCANNED = (
    "global_head_dim",
    "global_kv_heads",
    "global_values_from_keys",
    "kv_shared_layers",
    "per_layer_input_dim",
)


@dataclass(frozen=True, kw_only=True)
class Gemma4Options:
    """Gemma 4's layer switches (``model.gemma4``; what they are: this module's docstring).

    Every bad value raises ``ValueError`` at construction naming ``Gemma4Options.<field>``.
    """

    global_head_dim: int | None = setting(
        None, help="head width of the layers without a window; None: head_dim"
    )
    global_kv_heads: int | None = setting(
        None, help="key/value heads of the layers without a window; None: num_kv_heads"
    )
    global_values_from_keys: bool = setting(
        False, help="layers without a window: values are the key projection, no value one"
    )
    global_rope_proportion: float = setting(
        1.0, help="layers without a window turn this share of each head's RoPE pairs"
    )
    value_norm: bool = setting(False, help="RMSNorm without a scale of each value head")
    kv_shared_layers: int = setting(
        0, help="the last k layers reuse the keys/values of an earlier layer of their kind"
    )
    kv_shared_mlp_dim: int | None = setting(
        None, help="MLP width of the kv_shared_layers (Gemma 4: 2 mlp_dim); None: mlp_dim"
    )
    per_layer_input_dim: int = setting(
        0, help="width of per-layer embeddings into every layer (PLE); 0: none"
    )
    per_layer_vocab_size: int | None = setting(
        None, help="rows of the per-layer embedding table; None: vocab_size"
    )
    layer_scale: bool = setting(False, help="each layer's output times a learned scalar")

    def __post_init__(self) -> None:
        cls = type(self).__name__
        for name in ("global_head_dim", "global_kv_heads", "kv_shared_mlp_dim"):
            _size(cls, name, getattr(self, name), least=1, none=True)
        _size(cls, "per_layer_vocab_size", self.per_layer_vocab_size, least=1, none=True)
        for name in ("kv_shared_layers", "per_layer_input_dim"):
            _size(cls, name, getattr(self, name), least=0, none=False)
        p = self.global_rope_proportion
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 < p <= 1.0:
            raise ValueError(f"{cls}.global_rope_proportion must be a number in (0, 1]; got {p!r}")
        object.__setattr__(self, "global_rope_proportion", float(p))
        if self.kv_shared_mlp_dim is not None and not self.kv_shared_layers:
            raise ValueError(
                f"{cls}.kv_shared_mlp_dim: only kv_shared_layers use it (0); set it to None"
            )
        if self.per_layer_vocab_size is not None and not self.per_layer_input_dim:
            raise ValueError(
                f"{cls}.per_layer_vocab_size: only per-layer embeddings use it "
                "(per_layer_input_dim 0); set it to None"
            )

    def unscanned(self) -> list[str]:
        """The switches on that give layers shapes of their own (`UNSCANNED`)."""
        return [n for n in UNSCANNED if getattr(self, n) not in (None, False, 0)]


def _size(cls: str, name: str, value: Any, *, least: int, none: bool) -> None:
    """``value`` an int ``>= least`` (or None where ``none``), else a ValueError naming it."""
    if none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        want = "a positive int or None" if none else f"an int >= {least}"
        raise ValueError(f"{cls}.{name} must be {want}; got {value!r}")


#: Gemma 4's old flat keys in a model section → their key in ``gemma4`` (the same names).
FLAT_GEMMA4_KEYS = {f.name: f.name for f in fields(Gemma4Options)}


def kv_source(windows: Sequence[int | None], shared: int, i: int) -> int | None:
    """The layer whose keys and values layer ``i`` attends to (one of the last ``shared``
    layers: the last layer of its kind before them), or None (its own); ``windows``: each
    layer's window (None: global). Plain data, not the config: the layer build asks it once a
    layer."""
    first = len(windows) - shared
    if i < first:
        return None
    wide = [w is None for w in windows]
    same = [j for j in range(first) if wide[j] == wide[i]]
    return same[-1] if same else None


def check_model(config: Any, cls: str) -> None:
    """What the section (set) needs of the rest of model ``config`` (class ``cls``): head
    counts, RoPE and layers it divides, and what tjx does not combine with it refused by name
    (a scanned stack, MLA, delta layers, chunks, ``attention.decode_topk``)."""
    c, g, key = config, config.gemma4, f"{cls}.gemma4"
    if g.global_kv_heads is not None and c.num_heads % g.global_kv_heads:
        raise ValueError(
            f"{key}.global_kv_heads: {g.global_kv_heads} must divide {cls}.num_heads "
            f"({c.num_heads})"
        )
    p = g.global_rope_proportion
    if g.global_head_dim is not None and c.position.kind == "rope" and g.global_head_dim % 2:
        raise ValueError(
            f"{key}.global_head_dim: rope needs an even width; got {g.global_head_dim}"
        )
    if p < 1.0 and (
        c.position.kind != "rope" or int(p * (g.global_head_dim or c.head_dim) // 2) < 1
    ):
        raise ValueError(
            f"{key}.global_rope_proportion {p} needs position 'rope' and at least one turning "
            f"pair (int(p · head_dim / 2) >= 1); got position {c.position.kind!r}"
        )
    if g.kv_shared_layers >= c.num_layers:
        raise ValueError(
            f"{key}.kv_shared_layers ({g.kv_shared_layers}) must be below num_layers "
            f"({c.num_layers}): a layer must compute the keys and values they read"
        )
    for i in range(c.num_layers - g.kv_shared_layers, c.num_layers):
        if kv_source(c.layer_windows(), g.kv_shared_layers, i) is None:
            raise ValueError(
                f"{key}.kv_shared_layers: layer {i} reads the keys and values of an earlier "
                "layer of its kind (windowed or global), and none comes before the shared ones; "
                "lower kv_shared_layers or change attention.window_pattern"
            )
    unscanned = g.unscanned()
    on = unscanned + [n for n in ("value_norm",) if g.value_norm]
    on += ["global_rope_proportion"] if p < 1.0 else []
    if not on:
        return
    # MLA and delta layers have no such geometry; a scan stacks one shape of layer.
    # Llama 4's chunks are local layers these switches would read as global (no window).
    defaults: dict[str, Any] = {"attention.type": "mha", "mixer_pattern": None}
    defaults["attention.chunk"] = None
    if unscanned:
        defaults["scan_layers"] = False
    if g.kv_shared_layers:
        # shared layers decode over their source's whole cache
        defaults["attention.decode_topk"] = None
    for name, want in defaults.items():
        value = setting_value(c, name)
        if value != want:
            raise ValueError(
                f"{cls}.{name} {value!r} is not supported with gemma4.{on[0]} set "
                f"(Gemma 4's layers); set {name}={want!r}"
            )
