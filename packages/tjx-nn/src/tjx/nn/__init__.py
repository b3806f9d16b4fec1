"""tjx.nn: Flax NNX transformer layers and models with logical axis names.

GPT-2, LLaMA-style decoders (with mixture-of-experts layers), BERT, ViT and an encoder-decoder;
sliding-window attention and RoPE scalings (linear, dynamic, yarn, longrope, llama3); KV-cache
generation (rolling for windows); HF interop (GPT-2, Llama, Mistral, Qwen2, Mixtral, Qwen2-MoE,
Qwen3-MoE: ``load_hf`` / ``save_hf``); LoRA adapters (``add_lora``,
merged or PEFT export) and preference losses (DPO, IPO); probes of a step (``tjx.nn.probes``:
per-layer norms, each token's loss, each layer's largest activation and attention logit) for a
replay; sequence-split (context parallel) runs
through ``sequence_parallel``; the attention kernels a model runs, resolved once where its parts
are built (``resolve_attention``; with an app's compile, the kernel that compiles); losses and
utilities. A run's
start checks and its step plan (``hf_start_config``, ``check_hf_settings``, ``clash_names``;
``batch_shapes``, ``roofline_inputs``, ``TOKEN_KEYS``) moved to the trainer app in 0.21
(the trainer's rooms): reading one here is an ImportError naming it.
"""

from tjx.core.deprecation import moved_out, moved_to_trainer
from tjx.nn import probes
from tjx.nn.attention import Attention
from tjx.nn.attention_config import LAYER_KINDS, AttentionConfig
from tjx.nn.bert import BERT
from tjx.nn.block import Block, LayerInputs, residual_std
from tjx.nn.config_io import config_from_dict, config_to_dict
from tjx.nn.configs import (
    ATTENTION_IMPLS,
    REMAT_POLICIES,
    SECTIONS,
    GPT2Config,
    LlamaConfig,
    TransformerConfig,
    make_config,
    setting_value,
)
from tjx.nn.decoder import GPT2, DecoderLM, Llama, head_cross_entropy
from tjx.nn.decoder_stages import DecoderStages, decoder_stages, pipelined_loss_fn
from tjx.nn.embeddings import Embed
from tjx.nn.encdec import EncoderDecoder
from tjx.nn.encoder_configs import BertConfig, EncoderDecoderConfig, ViTConfig
from tjx.nn.flops import flops_per_token, flops_per_unit, matmul_param_count
from tjx.nn.fp8 import Fp8Meta, advance_meta
from tjx.nn.gated_deltanet import DeltaConfig, DeltaState, GatedDeltaNet
from tjx.nn.generation import GenerationPrograms, generate, lower_generation, sample_logits
from tjx.nn.gpt2_presets import gpt2_config
from tjx.nn.grpo.advantages import group_advantages
from tjx.nn.grpo.config import GRPO_LOSSES, GrpoConfig
from tjx.nn.grpo.logprobs import token_logprobs, token_logprobs_and_entropies
from tjx.nn.grpo.losses import GrpoOutput, grpo_loss
from tjx.nn.hf.checkpoints import check_hf_weights, load_hf, load_hf_gpt2, save_hf, save_hf_gpt2
from tjx.nn.hf.gpt2 import HF_GPT2_FIXED, HF_GPT2_NAMES, hf_gpt2_conflicts
from tjx.nn.hf.io import is_hub_id
from tjx.nn.hf.plan import HF_MODEL_TYPES, hf_export_type, hf_kind, hf_model_type, read_hf_config
from tjx.nn.hf.start import (
    HF_LLAMA_FIXED,
    HOW_TO_TRAIN,
    TRAINING_FIELDS,
    config_clashes,
    hf_conflicts,
)
from tjx.nn.kernel_choice import (
    ModelAttention,
    delta_kernel_line,
    resolve_attention,
    split_kernel_line,
)
from tjx.nn.kv_cache import cache_slots, init_cache, kv_cache_bytes, topk_decode_attention
from tjx.nn.linear import Dense, LoRAAdapter, dropout
from tjx.nn.lora import (
    LORA_ROLES,
    LoraConfig,
    adapters_off,
    add_lora,
    add_saved_lora,
    has_lora,
    lora_param_count,
    merge_lora,
)
from tjx.nn.losses import (
    classification_loss,
    contrastive_loss,
    cross_entropy_loss,
    logits_cross_entropy,
    masked_lm_loss,
    masked_mean,
    mlm_mask,
)
from tjx.nn.mla_config import MLAConfig
from tjx.nn.mlp import ACTIVATIONS, MLP, MLPConfig
from tjx.nn.model_state import (
    concrete_state,
    is_key,
    join_fp8_meta,
    part_fp8_meta,
    reseed,
    split_fp8_meta,
)
from tjx.nn.moe.config import MoEConfig, moe_layers
from tjx.nn.moe.layer import MoE, MoEStats, router_penalty
from tjx.nn.moe.parallel import current_expert_parallel, expert_parallel_scope
from tjx.nn.mtp import MTP, MTPLayer, MTPLoss, mtp_loss, mtp_metric
from tjx.nn.mtp_config import MTPConfig
from tjx.nn.norm_config import NORMS, NormConfig
from tjx.nn.norms import LayerNorm, RMSNorm
from tjx.nn.objectives import (
    OBJECTIVES,
    Objective,
    ObjectiveLoss,
    eval_mask_key,
    objective_logits,
    objective_logits_fn,
    objective_loss,
    objective_of,
    token_loss,
)
from tjx.nn.old_layout import RENAMED_MODEL_KEYS, migrate_model_section
from tjx.nn.params import LOGICAL_AXES, InitConfig, make_param
from tjx.nn.params_io import get_flat_params, set_flat_params
from tjx.nn.peft_io import check_peft_export, save_peft
from tjx.nn.position_config import POSITIONS, PositionConfig
from tjx.nn.positions import alibi_bias, alibi_slopes, apply_rope, rope_inv_freq, sinusoidal
from tjx.nn.precision import DTYPE_NAMES, Precision, idle_fp8_settings
from tjx.nn.preference.losses import (
    PREFERENCE_LOSSES,
    PreferenceConfig,
    PreferenceOutput,
    dpo_loss,
    heldout_preference,
    preference_loss,
    preference_means,
    sequence_logprobs,
)
from tjx.nn.preference.rules import check_preference_run
from tjx.nn.preference.steps import preference_loss_fn, preference_step_metrics, preference_sums_fn
from tjx.nn.registry import MODEL_KINDS, build_model
from tjx.nn.relative_bias import RelativePositionBias, t5_relative_bucket
from tjx.nn.rope_scaling import ROPE_SCALINGS, RopeScaling, rope_parameters
from tjx.nn.routers import ROUTERS, Routing, register_router
from tjx.nn.seq2seq_generation import generate_seq2seq
from tjx.nn.sequence import SequenceSplit, current_sequence_parallel, sequence_parallel
from tjx.nn.speculative import Speculation, generate_speculative
from tjx.nn.split_rules import check_pipelinable, check_sequence_split, model_kind
from tjx.nn.stack import Stack, remat_policy
from tjx.nn.utils import config_param_count, count_params, summary
from tjx.nn.vit import ViT

__version__ = "0.38.2"

#: Names that moved to the trainer app in 0.21 (a package never imports an app, so no shim).
__getattr__ = moved_out(
    __name__,
    moved_to_trainer(
        "start check",
        "trainer.step.init_checks",
        ("check_hf_settings", "clash_names", "hf_start_config"),
    )
    | moved_to_trainer("step plan", "trainer", ("roofline_inputs",))
    | moved_to_trainer("step plan", "trainer.plan.step_plan", ("TOKEN_KEYS", "batch_shapes")),
    since="tjx-nn 0.21",
)

__all__ = [
    "probes",
    "token_logprobs",
    "token_logprobs_and_entropies",
    "grpo_loss",
    "group_advantages",
    "GrpoOutput",
    "GrpoConfig",
    "GRPO_LOSSES",
    "ACTIVATIONS",
    "ATTENTION_IMPLS",
    "Attention",
    "AttentionConfig",
    "BERT",
    "BertConfig",
    "Block",
    "DTYPE_NAMES",
    "DeltaConfig",
    "DecoderLM",
    "DecoderStages",
    "Dense",
    "Embed",
    "EncoderDecoder",
    "EncoderDecoderConfig",
    "Fp8Meta",
    "GPT2",
    "GPT2Config",
    "HF_GPT2_FIXED",
    "HF_GPT2_NAMES",
    "HF_LLAMA_FIXED",
    "HF_MODEL_TYPES",
    "HOW_TO_TRAIN",
    "LAYER_KINDS",
    "InitConfig",
    "LOGICAL_AXES",
    "LORA_ROLES",
    "LayerInputs",
    "LayerNorm",
    "Llama",
    "LlamaConfig",
    "LoRAAdapter",
    "LoraConfig",
    "MLP",
    "MLPConfig",
    "MODEL_KINDS",
    "MLAConfig",
    "MoE",
    "MoEConfig",
    "MTPConfig",
    "MoEStats",
    "NORMS",
    "NormConfig",
    "OBJECTIVES",
    "Objective",
    "ObjectiveLoss",
    "POSITIONS",
    "PositionConfig",
    "PREFERENCE_LOSSES",
    "Precision",
    "PreferenceConfig",
    "PreferenceOutput",
    "REMAT_POLICIES",
    "RENAMED_MODEL_KEYS",
    "RMSNorm",
    "ROPE_SCALINGS",
    "ROUTERS",
    "RelativePositionBias",
    "RopeScaling",
    "Routing",
    "SECTIONS",
    "SequenceSplit",
    "Stack",
    "TRAINING_FIELDS",
    "TransformerConfig",
    "ViT",
    "ViTConfig",
    "__version__",
    "adapters_off",
    "add_lora",
    "add_saved_lora",
    "advance_meta",
    "alibi_bias",
    "alibi_slopes",
    "apply_rope",
    "build_model",
    "cache_slots",
    "check_hf_weights",
    "check_peft_export",
    "check_pipelinable",
    "check_preference_run",
    "check_sequence_split",
    "classification_loss",
    "concrete_state",
    "config_clashes",
    "config_from_dict",
    "config_param_count",
    "config_to_dict",
    "contrastive_loss",
    "count_params",
    "cross_entropy_loss",
    "current_expert_parallel",
    "current_sequence_parallel",
    "decoder_stages",
    "dpo_loss",
    "dropout",
    "eval_mask_key",
    "expert_parallel_scope",
    "flops_per_token",
    "flops_per_unit",
    "generate",
    "generate_speculative",
    "GatedDeltaNet",
    "DeltaState",
    "lower_generation",
    "GenerationPrograms",
    "generate_seq2seq",
    "get_flat_params",
    "gpt2_config",
    "has_lora",
    "head_cross_entropy",
    "heldout_preference",
    "hf_conflicts",
    "hf_gpt2_conflicts",
    "hf_export_type",
    "hf_kind",
    "hf_model_type",
    "idle_fp8_settings",
    "init_cache",
    "is_hub_id",
    "is_key",
    "join_fp8_meta",
    "kv_cache_bytes",
    "load_hf",
    "load_hf_gpt2",
    "logits_cross_entropy",
    "lora_param_count",
    "make_config",
    "make_param",
    "masked_lm_loss",
    "masked_mean",
    "matmul_param_count",
    "merge_lora",
    "migrate_model_section",
    "mlm_mask",
    "model_kind",
    "moe_layers",
    "objective_logits",
    "objective_logits_fn",
    "objective_loss",
    "MTP",
    "MTPLayer",
    "MTPLoss",
    "mtp_loss",
    "mtp_metric",
    "Speculation",
    "objective_of",
    "part_fp8_meta",
    "pipelined_loss_fn",
    "preference_loss",
    "preference_loss_fn",
    "preference_means",
    "preference_step_metrics",
    "preference_sums_fn",
    "read_hf_config",
    "register_router",
    "remat_policy",
    "reseed",
    "residual_std",
    "rope_inv_freq",
    "rope_parameters",
    "router_penalty",
    "sample_logits",
    "save_hf",
    "save_hf_gpt2",
    "save_peft",
    "sequence_logprobs",
    "sequence_parallel",
    "set_flat_params",
    "setting_value",
    "sinusoidal",
    "split_fp8_meta",
    "summary",
    "t5_relative_bucket",
    "token_loss",
    "topk_decode_attention",
    "delta_kernel_line",
    "resolve_attention",
    "ModelAttention",
    "split_kernel_line",
]
