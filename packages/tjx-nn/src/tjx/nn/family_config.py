"""The architecture switches of the 2024-25 decoder families (their checks: ``check_family``, with
the config's other checks in :mod:`tjx.nn.configs`).

Each is one ``TransformerConfig`` setting (``configs.py``; the attention ones in its ``attention``
section, Llama 4's NoPE ones in its ``llama4`` section), off by default:

* ``attention.qk_norm`` (Qwen3, Gemma 3, OLMo 2): an RMSNorm of the queries and of the keys after
  their projections, before RoPE. ``attention.qk_norm_scope``: ``"head"`` normalises each head
  alone with one ``head_dim`` scale shared by the heads (Qwen3, Gemma 3); ``"projection"``
  normalises all heads of a token together, with a scale per ``heads × head_dim`` column (OLMo 2).
* ``norm_position`` ``"sandwich"`` (Gemma 2/3): ``x + norm₂(f(norm₁(x)))`` around attention and the
  MLP; ``"output"`` (OLMo 2): ``x + norm(f(x))``. Both keep the final norm. Decoders only.
* ``norm_plus_one`` (Gemma): every norm multiplies by ``1 + weight``, the weight starting at 0
  (its stored value is the checkpoint's, so weight decay pulls the scale towards 1).
* ``scale_embeddings`` (Gemma): token embeddings times ``sqrt(d_model)``, the factor rounded to
  float32 and then to the compute dtype as transformers does (``sqrt(3072)`` is 55.43 in float32,
  55.5 in bfloat16). The tied output head reads the unscaled table.
* ``attention.query_pre_attn_scalar`` (Gemma): attention logits scale ``1/sqrt(it)``
  instead of ``1/sqrt(head_dim)``.
* ``attention.logit_softcap`` (Gemma 2): scaled attention logits become ``c·tanh(x/c)`` before the
  mask, in every kernel that serves them (XLA, Pallas); cuDNN cannot, so ``attention_impl:
  cudnn`` is refused with it and ``auto`` leaves cuDNN out (``tjx.kernels.auto_order``).
* ``final_logit_softcap`` (Gemma 2): output logits become ``c·tanh(x/c)``, in ``logits``, the
  chunked loss and generation alike.

* ``rope_local_theta`` (Gemma 3): the RoPE base of the layers whose ``attention.sliding_window``
  applies (``window_pattern``'s ``"local"`` ones), without ``rope_scaling`` (transformers rotates
  Gemma 3's local layers with the default RoPE at ``rope_local_base_freq``); the global layers keep
  ``rope_theta`` and ``rope_scaling``. None: every layer rotates alike. Needs a window.
* ``attention.sinks`` (gpt-oss): each self-attention layer learns one logit per query head that
  every softmax row sees in its denominator, with no value behind it (a row may then attend to
  "nothing"). ``tjx.kernels.attention(..., sinks=)`` computes it on the XLA path only, so
  ``attention_impl`` ``cudnn``/``pallas`` are refused with it (``auto`` resolves to XLA), as are
  ``decode_topk`` and MLA. Decoders only.
* ``rope_fraction`` (GLM-4.5's ``partial_rotary_factor``): RoPE rotates the first
  ``int(head_dim · rope_fraction)`` dims of each query and key head (rotate-half within them, its
  frequencies those of a head that wide) and passes the rest through. 1: the whole head.

Llama 4's (its global layers are ``window_pattern``'s ``"global"`` ones):

* ``attention.chunk``: the local layers attend within chunks of this many positions instead of a
  sliding window (position ``p`` sees the keys from ``chunk·⌊p/chunk⌋`` to ``p``: tjx.kernels'
  ``attention(chunk=)``, a decoding step the keys of its own chunk). Not with ``sliding_window``.
* ``llama4.global_nope``: the global layers rotate no position (NoPE); RoPE turns the local ones
  only.
* ``qk_l2_norm``: queries and keys divided by their RMS over each head (``norm_eps``, no weight)
  after RoPE, in the layers RoPE rotates.
* ``llama4.nope_temperature_floor`` / ``llama4.nope_temperature_scale``: a NoPE layer's queries
  times ``1 + scale · log(1 + ⌊(p + 1) / floor⌋)`` at position ``p`` (``attn_temperature_tuning``).
* MoE: the ``sigmoid_plain`` router (`tjx.nn.routers`) and ``router_scales_input``, the routed
  weight scaling the expert's input instead of its output (`tjx.nn.moe.dispatch`).

Gemma 4's layer switches (checked by ``check_layers``; decoders only). A *global* layer is one
without a window (``layer_windows``' None):

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
* ``moe.beside_mlp`` (MoE layers): the dense MLP stays and the MoE block runs beside it on the
  same residual, each with its own norms: ``x + n(n₁(mlp(n₀(x))) + n₃(moe(n₂(x))))``.
  ``moe.router_input_norm``: the router reads ``rms(x)·s/sqrt(d)`` of that residual (``s`` a learned
  ``[d]`` scale), not the experts' input; ``moe.router_expert_scale``: each routed weight (after
  the top-k renormalisation) times a learned scale of its expert. (These three are the ``moe``
  section's, `MoEConfig`, which refuses them without experts.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from tjx.core.config.values import positive

#: What ``attention.qk_norm`` normalises over: each head alone, or all heads of a token together.
QK_NORM_SCOPES = ("head", "projection")
#: Norm positions only decoder blocks implement.
DECODER_NORM_POSITIONS = ("sandwich", "output")
#: Llama 4's attention switches (a decoder's, above).
LLAMA4_SWITCHES = (
    "attention.chunk",
    "llama4.global_nope",
    "qk_l2_norm",
    "llama4.nope_temperature_floor",
    "llama4.nope_temperature_scale",
)
#: Gemma 4's layer switches (a decoder's, above; ``check_layers``).
GEMMA4_SWITCHES = (
    "global_head_dim",
    "global_kv_heads",
    "global_values_from_keys",
    "global_rope_proportion",
    "value_norm",
    "kv_shared_layers",
    "kv_shared_mlp_dim",
    "per_layer_input_dim",
    "per_layer_vocab_size",
    "layer_scale",
)
#: Fields only decoders (GPT2, Llama) read: the other families refuse them (``unused_fields``).
DECODER_ONLY: Mapping[str, str] = {
    name: "only decoders (gpt2, llama) implement it"
    for name in (
        "norm_plus_one",
        "scale_embeddings",
        "final_logit_softcap",
        "attention.sinks",
        *LLAMA4_SWITCHES,
        *GEMMA4_SWITCHES,
    )
} | {
    name: "only decoders (gpt2, llama) predict further tokens"
    for name in ("mtp_depths", "mtp_loss_weight")
}
#: Gemma 4's switches that give layers parameters of different shapes: a scanned stack (one
#: shape for every layer) cannot hold them.
UNSCANNED = (
    "global_head_dim",
    "global_kv_heads",
    "global_values_from_keys",
    "kv_shared_layers",
    "per_layer_input_dim",
)


class LayerShape(NamedTuple):
    """What one self-attention layer of a decoder is (`layer_shape`)."""

    is_global: bool  # no window
    head_dim: int
    kv_heads: int
    values_from_keys: bool  # no value projection
    kv_source: int | None  # the layer whose keys/values it reads (kv_shared_layers), or None
    keeps_kv: bool  # a later layer reads its keys/values
    mlp_dim: int


def kv_source(config: Any, i: int) -> int | None:
    """The layer whose keys and values layer ``i`` attends to (one of the last
    ``kv_shared_layers``: the last layer of its kind before them), or None (its own)."""
    first = config.num_layers - config.kv_shared_layers
    if i < first:
        return None
    wide = [w is None for w in config.layer_windows()]
    same = [j for j in range(first) if wide[j] == wide[i]]
    return same[-1] if same else None


def layer_shape(config: Any, i: int) -> LayerShape:
    """Layer ``i``'s attention geometry, key/value source and MLP width."""
    c = config
    wide = c.layer_windows()[i] is None
    source = kv_source(c, i)
    keeps = any(
        kv_source(c, j) == i for j in range(c.num_layers - c.kv_shared_layers, c.num_layers)
    )
    shared = i >= c.num_layers - c.kv_shared_layers
    return LayerShape(
        is_global=wide,
        head_dim=(c.global_head_dim or c.head_dim) if wide else c.head_dim,
        kv_heads=(c.global_kv_heads or c.num_kv_heads) if wide else c.num_kv_heads,
        values_from_keys=wide and c.global_values_from_keys,
        kv_source=source,
        keeps_kv=keeps,
        mlp_dim=(c.kv_shared_mlp_dim or c.mlp_dim) if shared else c.mlp_dim,
    )


def check_layers(config: Any, cls: str) -> None:
    """Gemma 4's layer switches: sizes positive, each with what it needs, and what tjx does not
    combine with them refused by name (a scanned stack, MLA, delta layers, ``decode_topk``)."""
    c = config
    for name in ("global_head_dim", "global_kv_heads", "kv_shared_mlp_dim", "per_layer_vocab_size"):
        value = getattr(c, name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ValueError(f"{cls}.{name} must be a positive int or None; got {value!r}")
    for name in ("kv_shared_layers", "per_layer_input_dim"):
        value = getattr(c, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{cls}.{name} must be an int >= 0; got {value!r}")
    if c.global_kv_heads is not None and c.num_heads % c.global_kv_heads:
        raise ValueError(
            f"{cls}.global_kv_heads: {c.global_kv_heads} must divide {cls}.num_heads "
            f"({c.num_heads})"
        )
    p = c.global_rope_proportion
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 < p <= 1.0:
        raise ValueError(f"{cls}.global_rope_proportion must be a number in (0, 1]; got {p!r}")
    object.__setattr__(c, "global_rope_proportion", float(p))
    if c.global_head_dim is not None and c.position == "rope" and c.global_head_dim % 2:
        raise ValueError(
            f"{cls}.global_head_dim: rope needs an even width; got {c.global_head_dim}"
        )
    if p < 1.0 and (c.position != "rope" or int(p * (c.global_head_dim or c.head_dim) // 2) < 1):
        raise ValueError(
            f"{cls}.global_rope_proportion {p} needs position 'rope' and at least one turning "
            f"pair (int(p · head_dim / 2) >= 1); got position {c.position!r}"
        )
    if c.kv_shared_layers >= c.num_layers:
        raise ValueError(
            f"{cls}.kv_shared_layers ({c.kv_shared_layers}) must be below num_layers "
            f"({c.num_layers}): a layer must compute the keys and values they read"
        )
    for i in range(c.num_layers - c.kv_shared_layers, c.num_layers):
        if kv_source(c, i) is None:
            raise ValueError(
                f"{cls}.kv_shared_layers: layer {i} reads the keys and values of an earlier "
                "layer of its kind (windowed or global), and none comes before the shared ones; "
                "lower kv_shared_layers or change window_pattern"
            )
    if c.kv_shared_mlp_dim is not None and not c.kv_shared_layers:
        raise ValueError(
            f"{cls}.kv_shared_mlp_dim: only kv_shared_layers use it (0); set it to None"
        )
    if c.per_layer_vocab_size is not None and not c.per_layer_input_dim:
        raise ValueError(
            f"{cls}.per_layer_vocab_size: only per-layer embeddings use it "
            "(per_layer_input_dim 0); set it to None"
        )
    unscanned = [n for n in UNSCANNED if getattr(c, n) not in (None, False, 0)]
    on = unscanned + [n for n in ("value_norm",) if c.value_norm]
    on += ["global_rope_proportion"] if c.global_rope_proportion < 1.0 else []
    if not on:
        return
    # MLA and delta layers have no such geometry; a scan stacks one shape of layer.
    # Llama 4's chunks are local layers these switches would read as global (no window).
    defaults: dict[str, Any] = {"attention.type": "mha", "mixer_pattern": None}
    defaults["attention.chunk"] = None
    if unscanned:
        defaults["scan_layers"] = False
    if c.kv_shared_layers:
        # shared layers decode over their source's whole cache
        defaults["attention.decode_topk"] = None
    for name, want in defaults.items():
        if _setting(c, name) != want:
            raise ValueError(
                f"{cls}.{name} {_setting(c, name)!r} is not supported with {on[0]} set (Gemma "
                f"4's layers); set {name}={want!r}"
            )


def _setting(config: Any, key: str) -> Any:
    """Setting ``key`` of ``config``, a dotted key a section's (`tjx.nn.configs.setting_value`,
    which this module, below the configs, cannot import)."""
    for part in key.split("."):
        config = getattr(config, part)
    return config


def nope_layers(config: Any) -> tuple[bool, tuple[float, float] | None]:
    """Llama 4's NoPE (its ``llama4`` section): whether the global layers rotate no position,
    and their queries' temperature ``(floor, scale)`` (None: untempered)."""
    return config.llama4.global_nope, config.llama4.temperature()


def check_mtp(config: Any, cls: str) -> None:
    """``mtp_depths`` >= 0 and ``mtp_loss_weight`` >= 0 (:mod:`tjx.nn.mtp`)."""
    positive(cls, "mtp_depths", config.mtp_depths, allow_zero=True)
    if config.mtp_depths:  # an MTP module is one full-attention block (DeepSeek's, GLM-4.5's)
        local = (
            ("attention.sliding_window", None),
            ("attention.chunk", None),
            ("mixer_pattern", None),
        )
        for name, off in (*local, ("position", "t5")):
            value = _setting(config, name)
            if (value is not None) if off is None else value == off:
                raise ValueError(
                    f"{cls}.mtp_depths: multi-token prediction is implemented for full-attention "
                    f"decoders; got {name}={value!r} (set mtp_depths=0)"
                )
    if not config.mtp_loss_weight >= 0:
        raise ValueError(f"{cls}.mtp_loss_weight must be >= 0; got {config.mtp_loss_weight!r}")
