"""Hugging Face Llama 4 text (``Llama4ForCausalLM``, ``llama4_text``) ↔ tjx ``Llama`` with
chunked local layers, NoPE global layers and Llama 4's MoE layers.

=====================================  ========================================================
config.json / tensor                   tjx
=====================================  ========================================================
``no_rope_layers`` (1: RoPE; default:  ``window_pattern``: a RoPE layer ``"local"``, a NoPE one
every ``no_rope_layer_interval``-th    ``"global"`` (``global_nope``); ``attention_chunk_size``
NoPE), ``attention_chunk_size``,       → ``attention_chunk`` (transformers chunks exactly the
``layer_types``                        RoPE layers: an explicit ``layer_types`` must agree)
``use_qk_norm``                        ``qk_l2_norm`` (RoPE layers only, ``rms_norm_eps``)
``attn_temperature_tuning``,           ``nope_temperature_floor``, ``nope_temperature_scale``
``floor_scale``, ``attn_scale``        (with no NoPE layer it changes nothing: off)
``interleave_moe_layer_step``,         ``moe.layer_step`` (``moe.first_dense`` for a list that
``moe_layers``                         starts later); no MoE layer: a dense model
``num_local_experts``,                 ``num_experts``, ``experts_per_token``; the
``num_experts_per_tok``                ``sigmoid_plain`` router, weights not renormalised,
                                       scaling the expert's input (``router_scales_input``)
``intermediate_size``,                 ``expert_mlp_dim`` and the one shared expert's width;
``intermediate_size_mlp``              the dense layers' ``mlp.dim``
``rope_parameters`` (default, llama3)  ``rope_theta`` (default 500000), ``rope_scaling``
``feed_forward.experts.gate_up_proj``  ``moe.experts.fc_gate`` (its first ``f`` columns) and
``[E, d, 2f]``, ``down_proj``          ``fc_in`` (the rest); ``fc_out`` as stored
``[E, f, d]``
``feed_forward.router``,               ``moe.router``, ``moe.shared``; a dense layer's
``shared_expert.*``, ``feed_forward``  ``mlp``
``.{gate,up,down}_proj``
=====================================  ========================================================

Modules: ``hf_read`` (config.json → config: transformers' defaults, what is refused),
``hf_write`` (config → config.json), ``hf_tensors`` (the tensor names, the rotary rows' order and
the experts' fused layout), ``hf_image_text`` (the published image-text folders read as their text
model).
"""

from __future__ import annotations

from typing import Any

from tjx.nn.hf.config import OTHER_MOE_OPTIONS
from tjx.nn.hf.family_base import LLAMA_BLOCK

LLAMA4 = "llama4_text"
ARCHITECTURE = "Llama4ForCausalLM"
#: Llama 4's own switches of those a LLaMA block has off (`family_base.OTHER_SWITCHES`).
OWN = ("qk_l2_norm", "llama4.global_nope", "attention.chunk")
#: What a config must have to be written as Llama 4 (beside its MoE layers' `MOE_NEEDS`).
NEEDS: dict[str, Any] = (
    dict(
        # Llama's own block (its q/k norm is Llama 4's weightless one, not this), and its own
        # switches (chunks, NoPE layers, the weightless q/k norm) as it writes them.
        {k: v for k, v in LLAMA_BLOCK.items() if k not in OWN},
        use_bias=False,
        mixer_pattern=None,
    )
    | {
        "attention.qkv_bias": False,
        "attention.sinks": False,
        "attention.output_gate": False,
        "attention.sliding_window": None,
    }
    | {"position.rope_fraction": 1.0}
)
#: What Llama 4's MoE layers compute: the import builds them with it, the export checks it.
MOE_NEEDS: dict[str, Any] = OTHER_MOE_OPTIONS | dict(
    router="sigmoid_plain",
    router_norm_topk=False,
    router_scales_input=True,
    router_scale=1.0,
    router_groups=1,
    router_logit_bias=False,
    num_shared_experts=1,
    shared_expert_gate=False,
    capacity_factor=None,
)
