"""Hugging Face Gemma 4 text (``Gemma4ForCausalLM``, ``gemma4_text``) ↔ tjx ``Llama``: the
family's names and what its import sets and its export needs.

Gemma 4 is Gemma 3's decoder (sandwich norms, embeddings × ``sqrt(d)``, GeGLU with the tanh
GELU, q/k norms, windowed and global layers at their own RoPE bases) with these changes, each a
``LlamaConfig`` switch (Gemma 4's own in its section ``gemma4``, `Gemma4Options`; below without
the prefix):

=========================================  ====================================================
config.json / tensor                       tjx
=========================================  ====================================================
norms scale by ``weight`` (not ``1 + w``)  ``norm.plus_one`` False
attention scale 1                          ``query_pre_attn_scalar`` 1
``v_norm`` (no weight)                     ``value_norm``
``layer_scalar`` ``[1]`` per layer         ``layer_scale`` (``stack.layers.<i>.scale``)
``global_head_dim`` (default 512) or       ``global_head_dim``; ``global_kv_heads`` (read only
``per_layer_config``;                      with ``attention_k_eq_v``, as transformers does)
``num_global_key_value_heads``
``attention_k_eq_v`` (no ``v_proj`` on     ``global_values_from_keys``
global layers)
``rope_parameters.full_attention``         ``rope_theta``, ``global_rope_proportion``
(``proportional``, ``partial_rotary_``     (``partial_rotary_factor``; ``default``: 1)
``factor`` 0.25); ``sliding_attention``    ``rope_local_theta``
``num_kv_shared_layers``,                  ``kv_shared_layers``; ``kv_shared_mlp_dim`` (2 ×
``use_double_wide_mlp``                    ``mlp.dim`` on those layers)
``hidden_size_per_layer_input``,           ``per_layer_input_dim``, ``per_layer_vocab_size``:
``vocab_size_per_layer_input``,            ``per_layer.table``, ``per_layer.proj``,
``embed_tokens_per_layer``,                ``per_layer.norm``; each layer's
``per_layer_model_projection`` ...         ``per_layer.gate``/``proj``/``norm``
``enable_moe_block``, ``num_experts``,     MoE layers (every layer) with ``moe.beside_mlp``:
``top_k_experts``,                         the MLP stays, the experts beside it (softmax top-k,
``moe_intermediate_size``; ``router.*``,   renormalised; ``moe.router_expert_scale``,
``experts.gate_up_proj`` ``[E, 2f, d]``    ``moe.router_input_norm``); gate_up split into
(gate rows first), ``down_proj``           ``fc_gate``/``fc_in`` on load, fused on export
=========================================  ====================================================

Modules: ``hf_read`` (config.json → config: transformers' defaults, what is refused),
``hf_write`` (config → config.json), ``hf_tensors`` (the tensor names and the experts' fused
layout), ``hf_image_text`` (the published image-text folders read as their text model).
"""

from __future__ import annotations

from typing import Any

from tjx.nn.families.gemma4.options import FLAT_GEMMA4_KEYS

GEMMA4 = "gemma4_text"
ARCHITECTURE = "Gemma4ForCausalLM"
#: What a config must compute to be written as Gemma 4 (beside ``check_exportable``'s).
NEEDS: dict[str, Any] = {
    "scale_embeddings": True,
    "attention.qk_norm": True,
    "attention.qk_norm_scope": "head",
    "attention.query_pre_attn_scalar": 1.0,
    "attention.logit_softcap": None,
    "norm.position": "sandwich",
    "norm.plus_one": False,
    "mlp.activation": "geglu",
    "gemma4.value_norm": True,
    "gemma4.layer_scale": True,
}
#: What Gemma 4's MoE block computes (a config with experts must have these ``moe`` section fields
#: to be written; the last three are Gemma 4's own, which make it save as gemma4_text).
MOE_NEEDS: dict[str, Any] = dict(
    router="softmax",
    router_norm_topk=True,
    num_shared_experts=0,
    layer_step=1,
    first_dense=0,
    capacity_factor=None,
    router_logit_bias=False,
    router_scale=1.0,
    router_groups=1,
    beside_mlp=True,
    router_input_norm=True,
    router_expert_scale=True,
)
#: The switches only Gemma 4 computes: a config with any of them saves as gemma4_text.
OWN = (
    *(f"gemma4.{name}" for name in FLAT_GEMMA4_KEYS),
    "moe.beside_mlp",
    "moe.router_input_norm",
    "moe.router_expert_scale",
)
