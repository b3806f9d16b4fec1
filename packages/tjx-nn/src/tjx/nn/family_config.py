"""The architecture switches of the 2024-25 decoder families (their checks: ``check_family``, with
the config's other checks in :mod:`tjx.nn.cross_checks`).

Each is one ``TransformerConfig`` setting (``configs.py``; the attention ones in its ``attention``
section, Llama 4's NoPE ones in its ``llama4`` section), off by default:

* ``attention.qk_norm`` (Qwen3, Gemma 3, OLMo 2): an RMSNorm of the queries and of the keys after
  their projections, before RoPE. ``attention.qk_norm_scope``: ``"head"`` normalises each head
  alone with one ``head_dim`` scale shared by the heads (Qwen3, Gemma 3); ``"projection"``
  normalises all heads of a token together, with a scale per ``heads × head_dim`` column (OLMo 2).
* ``norm.position`` ``"sandwich"`` (Gemma 2/3): ``x + norm₂(f(norm₁(x)))`` around attention and the
  MLP; ``"output"`` (OLMo 2): ``x + norm(f(x))``. Both keep the final norm. Decoders only.
* ``norm.plus_one`` (Gemma): every norm multiplies by ``1 + weight``, the weight starting at 0
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
* ``qk_l2_norm``: queries and keys divided by their RMS over each head (``norm.eps``, no weight)
  after RoPE, in the layers RoPE rotates.
* ``llama4.nope_temperature_floor`` / ``llama4.nope_temperature_scale``: a NoPE layer's queries
  times ``1 + scale · log(1 + ⌊(p + 1) / floor⌋)`` at position ``p`` (``attn_temperature_tuning``).
* MoE: the ``sigmoid_plain`` router (`tjx.nn.routers`) and ``router_scales_input``, the routed
  weight scaling the expert's input instead of its output (`tjx.nn.moe.dispatch`).

Gemma 4's layer switches are its option section ``gemma4`` (`Gemma4Options`,
:mod:`tjx.nn.families.gemma4.options`: what they are, and their checks). The shared layers read
them through `layer_shape` (what one layer is), which names no family to its callers. Its MoE
switches are the ``moe`` section's:

* ``moe.beside_mlp`` (MoE layers): the dense MLP stays and the MoE block runs beside it on the
  same residual, each with its own norms: ``x + n(n₁(mlp(n₀(x))) + n₃(moe(n₂(x))))``.
  ``moe.router_input_norm``: the router reads ``rms(x)·s/sqrt(d)`` of that residual (``s`` a learned
  ``[d]`` scale), not the experts' input; ``moe.router_expert_scale``: each routed weight (after
  the top-k renormalisation) times a learned scale of its expert. (These three are the ``moe``
  section's, `MoEConfig`, which refuses them without experts.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

from tjx.nn.config_keys import setting_value
from tjx.nn.families.gemma4 import options as gemma4_options
from tjx.nn.families.gemma4.options import FLAT_GEMMA4_KEYS

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
#: The switches a plain LLaMA block lacks and only some families compute, at their off value: every
#: family's Hugging Face export needs each off but those its ``config.json`` says
#: (`tjx.nn.hf.config.other_switches`), so that a switch is refused by name, never dropped (the
#: checkpoint would load as another model): Llama 4's above, gpt-oss's sinks, Qwen3-Next's and
#: Qwen3.5's output gate and delta layers, Gemma 4's section. (The multi-token-prediction
#: modules, which only some types store, ``save_hf`` checks for every type.)
OTHER_SWITCHES: dict[str, Any] = {
    "attention.chunk": None,
    "llama4.global_nope": False,  # its temperature is refused without it (the section's check)
    "qk_l2_norm": False,
    "attention.sinks": False,
    "attention.output_gate": False,
    "mixer_pattern": None,
    **{f"gemma4.{f.name}": f.default for f in dataclasses.fields(gemma4_options.Gemma4Options)},
}
#: The MoE options (`MoEConfig` fields) only some families compute, at their off value
#: (`OTHER_SWITCHES`' rule, for a config with experts): gpt-oss's router bias, Llama 4's
#: input-scaled experts, Gemma 4's block beside the MLP with its router's input norm and
#: per-expert scale; and the capacity limit no family has (transformers routes every token, where
#: tjx drops those past it).
OTHER_MOE_OPTIONS: dict[str, Any] = dict(
    router_logit_bias=False,
    router_scales_input=False,
    beside_mlp=False,
    router_input_norm=False,
    router_expert_scale=False,
    capacity_factor=None,
)
#: The family sections' old flat keys in a model section → their dotted keys (the ``gemma4``
#: section's before tjx-nn 0.30 were flat fields).
FLAT_FAMILY_KEYS = {old: f"gemma4.{new}" for old, new in FLAT_GEMMA4_KEYS.items()}
#: The setting of the layers that read an earlier layer's keys and values (a split sequence
#: refuses them: `shared_kv_layers`).
SHARED_KV_KEY = "gemma4.kv_shared_layers"
#: Fields only decoders (GPT2, Llama) read: the other families refuse them (``unused_fields``).
DECODER_ONLY: Mapping[str, str] = {
    name: "only decoders (gpt2, llama) implement it"
    for name in (
        "norm.plus_one",
        "scale_embeddings",
        "final_logit_softcap",
        "attention.sinks",
        *LLAMA4_SWITCHES,
        "gemma4",
    )
} | {"mtp": "only decoders (gpt2, llama) predict further tokens"}


class LayerShape(NamedTuple):
    """What one self-attention layer of a decoder is (`layer_shape`): its geometry and the
    options of its parts, which the shared layers read instead of a family's switches."""

    is_global: bool  # no window
    head_dim: int
    kv_heads: int
    values_from_keys: bool  # no value projection
    kv_source: int | None  # the layer whose keys/values it reads (kv_shared_layers), or None
    keeps_kv: bool  # a later layer reads its keys/values
    mlp_dim: int
    value_norm: bool  # values RMS-normed per head, without a scale
    rope_proportion: float  # the share of RoPE pairs a global layer turns
    scaled: bool  # the layer's output times a learned scalar
    per_layer_dim: int  # the width of its per-layer input (0: none)


class LayerGeometry(NamedTuple):
    """What a decoder's layers share and `layer_shape` varies per layer: the config's head width,
    key/value heads, MLP width and each layer's window (``TransformerConfig.layer_windows``)."""

    head_dim: int
    kv_heads: int
    mlp_dim: int
    windows: tuple[int | None, ...]


def layer_shape(options: Any, geometry: LayerGeometry, i: int | None) -> LayerShape:
    """Layer ``i``'s attention geometry, key/value source, MLP width and part options, from the
    model's ``gemma4`` section (``options``) and shared ``geometry``; None: a layer of a stack
    whose layers are alike (scanned, or a prediction module's), of the shared geometry.
    ``TransformerConfig.layer_shape`` gives a config's."""
    g, (head_dim, kv_heads, mlp_dim, windows) = options, geometry
    shape = dict(
        value_norm=g.value_norm,
        rope_proportion=g.global_rope_proportion,
        scaled=g.layer_scale,
        per_layer_dim=g.per_layer_input_dim,
    )
    if i is None:
        return LayerShape(False, head_dim, kv_heads, False, None, False, mlp_dim, **shape)
    wide = windows[i] is None
    num_layers = len(windows)
    first = num_layers - g.kv_shared_layers
    keeps = any(kv_source(g, windows, j) == i for j in range(first, num_layers))
    return LayerShape(
        is_global=wide,
        head_dim=(g.global_head_dim or head_dim) if wide else head_dim,
        kv_heads=(g.global_kv_heads or kv_heads) if wide else kv_heads,
        values_from_keys=wide and g.global_values_from_keys,
        kv_source=kv_source(g, windows, i),
        keeps_kv=keeps,
        mlp_dim=(g.kv_shared_mlp_dim or mlp_dim) if i >= first else mlp_dim,
        **shape,
    )


def kv_source(options: Any, windows: tuple[int | None, ...], i: int) -> int | None:
    """The layer whose keys and values layer ``i`` attends to, or None (its own): Gemma 4's
    shared-KV layers (the ``gemma4`` section ``options``' ``kv_shared_layers``) of layers of
    ``windows`` (``TransformerConfig.layer_windows``)."""
    return gemma4_options.kv_source(windows, options.kv_shared_layers, i)


def layers_differ(config: Any) -> bool:
    """Whether ``config``'s layers differ in shape (a family switch giving layers parameters of
    their own shapes is on)."""
    return bool(config.gemma4.unscanned())


def shared_kv_layers(config: Any) -> int:
    """How many last layers read an earlier layer's keys and values (`SHARED_KV_KEY`)."""
    return int(config.gemma4.kv_shared_layers)


def nope_layers(options: Any) -> tuple[bool, tuple[float, float] | None]:
    """Llama 4's NoPE (the ``llama4`` section ``options``): whether the global layers rotate no
    position, and their queries' temperature ``(floor, scale)`` (None: untempered)."""
    return options.global_nope, options.temperature()


def check_mtp(config: Any, cls: str) -> None:
    """Multi-token prediction (the ``mtp`` section, :mod:`tjx.nn.mtp`) only on a decoder whose
    attention is full: an MTP module is one full-attention block (DeepSeek's, GLM-4.5's, and
    Qwen3.5's, whose stack mixes delta layers in: its module attends)."""
    if not config.mtp.depths:
        return
    local = (("attention.sliding_window", None), ("attention.chunk", None))
    for name, off in (*local, ("position.kind", "t5")):
        value = setting_value(config, name)
        if (value is not None) if off is None else value == off:
            raise ValueError(
                f"{cls}.mtp.depths: multi-token prediction is implemented for full-attention "
                f"decoders; got {name}={value!r} (set mtp.depths=0)"
            )
