"""The architecture switches of the 2024-25 decoder families (their checks: ``check_family``, with
the config's other checks in :mod:`tjx.nn.configs`).

Each is one ``TransformerConfig`` field (``configs.py``), off by default:

* ``qk_norm`` (Qwen3, Gemma 3, OLMo 2): an RMSNorm of the queries and of the keys after their
  projections, before RoPE. ``qk_norm_scope``: ``"head"`` normalises each head alone with one
  ``head_dim`` scale shared by the heads (Qwen3, Gemma 3); ``"projection"`` normalises all heads
  of a token together, with a scale per ``heads × head_dim`` column (OLMo 2).
* ``norm_position`` ``"sandwich"`` (Gemma 2/3): ``x + norm₂(f(norm₁(x)))`` around attention and the
  MLP; ``"output"`` (OLMo 2): ``x + norm(f(x))``. Both keep the final norm. Decoders only.
* ``norm_plus_one`` (Gemma): every norm multiplies by ``1 + weight``, the weight starting at 0
  (its stored value is the checkpoint's, so weight decay pulls the scale towards 1).
* ``scale_embeddings`` (Gemma): token embeddings times ``sqrt(d_model)``, the factor rounded to
  float32 and then to the compute dtype as transformers does (``sqrt(3072)`` is 55.43 in float32,
  55.5 in bfloat16). The tied output head reads the unscaled table.
* ``query_pre_attn_scalar`` (Gemma): attention logits scale ``1/sqrt(query_pre_attn_scalar)``
  instead of ``1/sqrt(head_dim)``.
* ``attn_logit_softcap`` (Gemma 2): scaled attention logits become ``c·tanh(x/c)`` before the
  mask, in every kernel that serves them (XLA, Pallas); cuDNN cannot, so ``attention_impl:
  cudnn`` is refused with it and ``auto`` leaves cuDNN out (``tjx.kernels.auto_order``).
* ``final_logit_softcap`` (Gemma 2): output logits become ``c·tanh(x/c)``, in ``logits``, the
  chunked loss and generation alike.

* ``rope_local_theta`` (Gemma 3): the RoPE base of the layers whose ``sliding_window`` applies
  (``window_pattern``'s ``"local"`` ones), without ``rope_scaling`` (transformers rotates Gemma 3's
  local layers with the default RoPE at ``rope_local_base_freq``); the global layers keep
  ``rope_theta`` and ``rope_scaling``. None: every layer rotates alike. Needs a window.
* ``attention_sinks`` (gpt-oss): each self-attention layer learns one logit per query head that
  every softmax row sees in its denominator, with no value behind it (a row may then attend to
  "nothing"). ``tjx.kernels.attention(..., sinks=)`` computes it on the XLA path only, so
  ``attention_impl`` ``cudnn``/``pallas`` are refused with it (``auto`` resolves to XLA), as are
  ``decode_topk`` and MLA. Decoders only.
* ``rope_fraction`` (GLM-4.5's ``partial_rotary_factor``): RoPE rotates the first
  ``int(head_dim · rope_fraction)`` dims of each query and key head (rotate-half within them, its
  frequencies those of a head that wide) and passes the rest through. 1: the whole head.

Llama 4's (its global layers are ``window_pattern``'s ``"global"`` ones):

* ``attention_chunk``: the local layers attend within chunks of this many positions instead of a
  sliding window (position ``p`` sees the keys from ``chunk·⌊p/chunk⌋`` to ``p``: tjx.kernels'
  ``attention(chunk=)``, a decoding step the keys of its own chunk). Not with ``sliding_window``.
* ``global_nope``: the global layers rotate no position (NoPE); RoPE turns the local ones only.
* ``qk_l2_norm``: queries and keys divided by their RMS over each head (``norm_eps``, no weight)
  after RoPE, in the layers RoPE rotates.
* ``nope_temperature_floor`` / ``nope_temperature_scale``: a NoPE layer's queries times
  ``1 + scale · log(1 + ⌊(p + 1) / floor⌋)`` at position ``p`` (``attn_temperature_tuning``).
* MoE: the ``sigmoid_plain`` router (`tjx.nn.routers`) and ``router_scales_input``, the routed
  weight scaling the expert's input instead of its output (`tjx.nn.moe.dispatch`).
"""

from __future__ import annotations

from collections.abc import Mapping

#: What ``qk_norm`` normalises over: each head alone, or all heads of a token together.
QK_NORM_SCOPES = ("head", "projection")
#: Norm positions only decoder blocks implement.
DECODER_NORM_POSITIONS = ("sandwich", "output")
#: Llama 4's attention switches (a decoder's, above).
LLAMA4_SWITCHES = (
    "attention_chunk",
    "global_nope",
    "qk_l2_norm",
    "nope_temperature_floor",
    "nope_temperature_scale",
)
#: Fields only decoders (GPT2, Llama) read: the other families refuse them (``unused_fields``).
DECODER_ONLY: Mapping[str, str] = {
    name: "only decoders (gpt2, llama) implement it"
    for name in (
        "norm_plus_one",
        "scale_embeddings",
        "final_logit_softcap",
        "attention_sinks",
        *LLAMA4_SWITCHES,
    )
} | {
    name: "only decoders (gpt2, llama) predict further tokens"
    for name in ("mtp_depths", "mtp_loss_weight")
}
