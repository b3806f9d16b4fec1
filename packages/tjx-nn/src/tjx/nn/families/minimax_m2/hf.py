"""Hugging Face MiniMax-M2 (``MiniMaxM2ForCausalLM``, ``minimax_m2``) ↔ tjx ``Llama`` with MoE
layers, as transformers 5.24's ``modeling_minimax_m2`` computes it.

=====================================  ========================================================
config.json / tensor                   tjx
=====================================  ========================================================
``rope_parameters``'                   ``position.rope_fraction``: RoPE turns each head's first
``partial_rotary_factor``, else the    ``int(head_dim · f)`` dims (rotate-half within them), the
top-level one, else ``rotary_dim /     rest pass through; ``rope_theta`` (default 5,000,000)
head_dim`` (the released folders'
legacy key), else 1
``self_attn.q_norm``/``k_norm``        ``qk_norm`` over the whole projection
(``[heads·head_dim]``, before the      (``qk_norm_scope`` ``"projection"``, eps
heads split: ``qk_norm_type``          ``rms_norm_eps``)
``per_layer``)
``num_local_experts``,                 every layer MoE: the ``sigmoid`` router, top-k of
``num_experts_per_tok``,               ``sigmoid(logits) + e_score_correction_bias``, weighted
``intermediate_size``                  by the unbiased sigmoid scores renormalised to 1 (one
                                       group, scale 1, no shared expert); ``expert_mlp_dim``
``block_sparse_moe.gate``,             ``moe.router`` and its ``bias``; the experts' ``w1``,
``.e_score_correction_bias``,          ``w3``, ``w2`` → ``fc_gate``, ``fc_in``, ``fc_out``
``.experts.<e>.{w1,w3,w2}``            (Mixtral's names, as transformers saves them)
``router_aux_loss_coef``               ``moe.router_aux_loss`` (a training setting)
=====================================  ========================================================

The released folders' legacy keys are checked, not ignored: ``use_qk_norm`` true,
``qk_norm_type`` ``per_layer``, ``scoring_func`` ``sigmoid``, ``use_routing_bias`` true,
``shared_intermediate_size`` 0 and an ``attn_type_list`` of full-attention layers (1) are what
transformers computes; anything else is a variant it does not (MiniMax-01's lightning-attention
layers, per-head q/k norms, a shared expert) and is refused by name. Their multi-token-prediction
modules (``use_mtp``, ``num_mtp_modules``, ``mtp_transformer_layers``) are not part of
transformers' model (nor of tjx's), nor of the released folders' tensors: the keys change nothing
it computes, and ``mtp.depths`` above 0 is refused as the config is read
(`tjx.nn.hf.mtp_tensors.reads_no_mtp`).

Modules: ``hf_read`` (config.json → config: transformers' defaults, what is refused),
``hf_write`` (config → config.json), ``hf_tensors`` (the tensor names).
"""

from __future__ import annotations

from typing import Any

from tjx.nn.hf.family_base import LLAMA_BLOCK

MINIMAX_M2 = "minimax_m2"
ARCHITECTURE = "MiniMaxM2ForCausalLM"
#: transformers' RoPE base where a config names none (``MiniMaxM2Config.default_theta``).
DEFAULT_THETA = 5_000_000.0
#: The released folders' ``auto_map``: the hub code transformers has upstreamed as its own
#: ``minimax_m2`` (which it loads instead when remote code is not trusted; tjx runs none either).
UPSTREAMED = {
    "AutoConfig": "configuration_minimax_m2.MiniMaxM2Config",
    "AutoModelForCausalLM": "modeling_minimax_m2.MiniMaxM2ForCausalLM",
}
#: What a config must have to be written as minimax_m2 (beside its MoE layers' `MOE_NEEDS`).
NEEDS: dict[str, Any] = dict(
    LLAMA_BLOCK,  # Llama's block (RMSNorm, RoPE, multi-head); its q/k norm is set below
    use_bias=False,
    mixer_pattern=None,
    qk_l2_norm=False,
) | {
    "attention.qkv_bias": False,
    "attention.qk_norm": True,
    "attention.qk_norm_scope": "projection",
    "attention.sinks": False,
    "attention.output_gate": False,
    "attention.sliding_window": None,
    "attention.chunk": None,
}
#: What MiniMax-M2's MoE layers compute: the import builds them with it, the export checks it.
MOE_NEEDS: dict[str, Any] = dict(
    router="sigmoid",
    router_norm_topk=True,
    router_scales_input=False,
    router_scale=1.0,
    router_groups=1,
    router_topk_groups=1,
    router_logit_bias=False,
    num_shared_experts=0,
    shared_expert_gate=False,
    layer_step=1,
    first_dense=0,
    capacity_factor=None,
    beside_mlp=False,
    router_input_norm=False,
    router_expert_scale=False,
)
