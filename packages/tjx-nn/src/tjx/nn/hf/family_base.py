"""What the Hugging Face imports of Qwen3, OLMo 2, Phi-3 and Gemma 2/3 share: the keys every
family maps, RoPE's base, the sliding-window rule, the common fields and the export checks; and
DeepSeek's MoE keys, which DeepSeek-V2/V3 and GLM-4.5 share (``deepseek_moe_*``).

Sliding windows map onto ``sliding_window`` and ``window_pattern`` (which layers slide, as
transformers decides per family: ``windows`` reads them, ``layer_types`` writes them). Not yet
honoured (refused in one line naming the key): a RoPE scaling (``rope_scaling``, or a non-default
``rope_parameters`` type), but Phi-3's LongRoPE (:mod:`tjx.nn.hf.phi3`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tjx.nn.configs import LlamaConfig, setting_value
from tjx.nn.hf.config import (
    BASE_KEYS,
    HARMLESS,
    OTHER_SWITCHES,
    check_known,
    llama_sizes_to_hf,
    max_position_to_hf,
    other_switches,
)
from tjx.nn.moe.config import expert_mlp_dim

#: The switches of a plain LLaMA (``family_config``): what llama/mistral/qwen2/phi3 compute with.
LLAMA_SWITCHES: dict[str, Any] = (
    dict(
        **{"attention.qk_norm": False},
        **{"attention.qk_norm_scope": "head"},
        scale_embeddings=False,
        **{"attention.query_pre_attn_scalar": None},
        **{"attention.logit_softcap": None},
        final_logit_softcap=None,
    )
    | {"position.rope_local_theta": None}
    | {"norm.position": "pre", "norm.plus_one": False}
    | {"mlp.activation": "swiglu"}
)
#: A plain LLaMA block as a family's export needs checks it: its switches on multi-head attention
#: with RoPE and RMSNorm, the other families' switches off (`OTHER_SWITCHES`: a family drops those
#: it writes); what `check_exportable` checks for the families of this module.
LLAMA_BLOCK: dict[str, Any] = (
    LLAMA_SWITCHES
    | OTHER_SWITCHES
    | {
        "attention.type": "mha",
        "position.kind": "rope",
        "norm.kind": "rmsnorm",
    }
)


#: ``auto_map`` entries naming the modelling code that transformers itself ships for the model
#: type (the hub code it was upstreamed from): transformers loads such a checkpoint with its own
#: class when remote code is not trusted, and so does tjx (it runs no code either way).
UPSTREAMED = {
    "phi3": {
        "AutoConfig": "configuration_phi3.Phi3Config",
        "AutoModelForCausalLM": "modeling_phi3.Phi3ForCausalLM",
    }
}


def check_keys(hf: Mapping[str, Any], model_type: str, family_keys: frozenset[str]) -> None:
    """Refuse ``auto_map`` (but the upstreamed Phi-3 classes), ``attention_bias`` and any key
    neither mapped nor harmless, by name."""
    auto_map = hf.get("auto_map")
    upstreamed = UPSTREAMED.get(model_type, {})
    if isinstance(auto_map, Mapping) and auto_map and auto_map.items() <= upstreamed.items():
        auto_map = None
    check_known(
        hf, model_type, BASE_KEYS | family_keys | HARMLESS, custom_code=auto_map is not None
    )
    if hf.get("attention_bias"):
        raise ValueError(
            f"config.json attention_bias true ({model_type}: biases on q, k, v and o but not the "
            "MLP) is not supported; tjx puts biases on every projection, on none, or on q/k/v only"
        )


def rope_theta(
    hf: Mapping[str, Any], model_type: str, params: Mapping[str, Any] | None = None
) -> float:
    """RoPE's base from the legacy ``rope_theta`` or v5's ``rope_parameters`` (``params``: one
    per-layer-type entry of it, Gemma 3); any scaling is refused (not yet honoured)."""
    entry = dict(params if params is not None else hf.get("rope_parameters") or {})
    for scaling in (hf.get("rope_scaling") or {}, entry):
        kind = scaling.get("rope_type", scaling.get("type", "default"))
        if kind != "default":
            raise ValueError(
                f"config.json rope_scaling of type {kind!r} is not supported for {model_type} yet "
                "(tjx reads these families' RoPE scalings with their long-context step); a model "
                "without rope_scaling loads"
            )
    partial = entry.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
    if partial not in (None, 1, 1.0):
        raise ValueError(f"config.json partial_rotary_factor {partial} is not supported (only 1)")
    theta = hf.get("rope_theta") if params is None else None
    return float(theta if theta is not None else entry.get("rope_theta", 10000.0))


def windows(window: Any, sliding: list[bool]) -> dict[str, Any]:
    """``sliding_window`` and ``window_pattern`` of a model whose layers slide as ``sliding``
    says (no window when none does; no pattern when all do; else the shortest repeating one)."""
    if window is None or not any(sliding):
        if any(sliding) and window is None:
            raise ValueError("config.json has sliding layers but no sliding_window")
        return {"attention.sliding_window": None, "attention.window_pattern": None}
    kinds = ["local" if s else "global" for s in sliding]
    if all(sliding):
        return {"attention.sliding_window": int(window), "attention.window_pattern": None}
    return {
        "attention.sliding_window": int(window),
        "attention.window_pattern": shortest_pattern(kinds),
    }


def shortest_pattern(kinds: list[str]) -> tuple[str, ...]:
    """The shortest pattern that, repeated, gives the layers' ``kinds``."""
    n = len(kinds)
    period = next(p for p in range(1, n + 1) if all(kinds[i] == kinds[i % p] for i in range(n)))
    return tuple(kinds[:period])


def layer_types(config: LlamaConfig) -> list[str]:
    """transformers' ``layer_types`` of ``config``: each layer sliding or full."""
    return ["full_attention" if w is None else "sliding_attention" for w in config.layer_windows()]


def base_fields(hf: Mapping[str, Any]) -> dict[str, Any]:
    """The ``LlamaConfig`` fields every family reads alike, from ``hf`` as the family's
    `keys.Spec` has read it (each key checked, transformers' defaults filled in)."""
    heads = hf["num_attention_heads"]
    return (
        dict(
            vocab_size=hf["vocab_size"],
            max_seq_len=hf["max_position_embeddings"],
            d_model=hf["hidden_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=hf["num_key_value_heads"] or heads,
            head_dim=hf["head_dim"],
            tie_embeddings=hf["tie_word_embeddings"],
            **{"attention.dropout": float(hf["attention_dropout"])},
            use_bias=False,
        )
        | {"norm.eps": float(hf["rms_norm_eps"])}
        | {"mlp.dim": hf["intermediate_size"], "init.std": float(hf["initializer_range"])}
    )


def check_exportable(
    config: LlamaConfig, rope_types: tuple[str, ...] = (), own: frozenset[str] = frozenset()
) -> None:
    """What every family's export needs: MHA with RoPE, RMSNorm, no biases, no RoPE scaling but
    of ``rope_types`` (those the family writes), and the other families' switches off
    (`other_switches`) but ``own``, those the family writes."""
    scaling = config.position.rope_scaling
    if scaling is not None and scaling.type in rope_types:
        scaling = None
    needs = {
        "attention.type": (config.attention.type, "mha"),
        "position.kind": (config.position.kind, "rope"),
        "norm.kind": (config.norm.kind, "rmsnorm"),
        "use_bias": (config.use_bias, False),
        "attention.qkv_bias": (config.attention.qkv_bias, False),
        "position.rope_scaling": (scaling, None),
        "position.rope_fraction": (
            config.position.rope_fraction,
            1.0,
        ),  # GLM-4.5's partial RoPE: glm4_moe
        "attention.sinks": (config.attention.sinks, False),  # gpt-oss's: gpt_oss
    }
    needs |= {k: (setting_value(config, k), v) for k, v in other_switches(config, own).items()}
    refuse_mismatches(
        {k: v for k, v in needs.items() if v[0] != v[1]},
        "this config cannot be saved as a Hugging Face family checkpoint",
    )


def mismatches(
    config: Any, needs: Mapping[str, Any], section: str | None = None
) -> dict[str, tuple[Any, Any]]:
    """Each field of ``config`` whose value is not ``needs``' → (its value, the value needed).

    A key may be dotted (``"moe.num_experts"``: a field of a section); with ``section``
    (``"moe"``) every key is a field of that section, named with its path in the result.
    """
    pre = "" if section is None else f"{section}."
    got = {pre + k: (setting_value(config, pre + k), v) for k, v in needs.items()}
    return {k: pair for k, pair in got.items() if pair[0] != pair[1]}


def refuse_mismatches(wrong: Mapping[str, tuple[Any, Any]], what: str) -> None:
    """Raise one line, ``what`` then every ``field=value (needs value)`` of ``wrong``; nothing
    when it is empty."""
    if wrong:
        got = ", ".join(f"{k}={v[0]!r} (needs {v[1]!r})" for k, v in wrong.items())
        raise ValueError(f"{what}: {got}")


def check_switches(
    config: LlamaConfig, model_type: str, want: Mapping[str, Any], hint: str
) -> None:
    """Raise one line naming every switch of ``config`` that ``model_type`` (computing ``want``)
    cannot express; ``hint`` says which model type would."""
    wrong = {k: setting_value(config, k) for k, v in want.items() if setting_value(config, k) != v}
    if wrong:
        got = ", ".join(f"{k}={v!r}" for k, v in wrong.items())
        needs = ", ".join(f"{k}={want[k]!r}" for k in wrong)
        raise ValueError(
            f"model_type {model_type!r} cannot express {got} (it computes {needs}); {hint}"
        )


def common_to_hf(config: LlamaConfig, *, rope_theta: bool = True) -> dict[str, Any]:
    """The ``config.json`` keys every family writes alike.

    The token ids are written as null: tjx does not know the tokenizer's, and transformers'
    defaults for a family (Phi-3's pad id 32000 ...) may not even fit the vocabulary. They live
    in ``generation_config.json``, which ``save_hf(..., tokenizer_from=)`` copies. With
    ``rope_theta=False`` there is no top-level ``rope_theta``: the families whose
    ``rope_parameters`` hold it (transformers 5's form) write it there.
    """
    out: dict[str, Any] = {
        "bos_token_id": None,
        "eos_token_id": None,
        "pad_token_id": None,
        **llama_sizes_to_hf(config),
        "max_position_embeddings": max_position_to_hf(config),  # dynamic NTK: its original
        "rms_norm_eps": config.norm.eps,
        "rope_theta": config.position.rope_theta,
        "tie_word_embeddings": config.tie_embeddings,
        "attention_dropout": config.attention.dropout,
        "initializer_range": config.init.std,
    }
    if not rope_theta:
        del out["rope_theta"]
    return out


def deepseek_moe_fields(
    hf: Mapping[str, Any], *, router: str, norm_topk: bool, grouped: bool = True
) -> dict[str, Any]:
    """The `MoEConfig` fields of DeepSeek's MoE keys (``n_routed_experts``, ``n_group`` ...),
    which DeepSeek-V2/V3 and GLM-4.5 share, from ``hf`` as the type's `keys.Spec` has read it.

    ``router`` and ``norm_topk`` are what the type computes; without ``grouped`` the top-k is
    over one group whatever ``n_group`` says (DeepSeek-V2's greedy one).
    """
    return dict(
        num_experts=hf["n_routed_experts"],
        experts_per_token=hf["num_experts_per_tok"],
        expert_mlp_dim=hf["moe_intermediate_size"],
        num_shared_experts=hf["n_shared_experts"],
        first_dense=hf["first_k_dense_replace"],
        router=router,
        router_norm_topk=norm_topk,
        router_scale=float(hf["routed_scaling_factor"]),
        router_groups=(hf["n_group"] or 1) if grouped else 1,
        router_topk_groups=(hf["topk_group"] or 1) if grouped else 1,
    )


def deepseek_moe_to_hf(config: LlamaConfig) -> dict[str, Any]:
    """DeepSeek's MoE keys of ``config``'s ``moe`` section, as DeepSeek-V2/V3 and GLM-4.5 write
    them (the inverse of `deepseek_moe_fields`)."""
    moe = config.moe
    return dict(
        n_routed_experts=moe.num_experts,
        num_experts_per_tok=moe.experts_per_token,
        moe_intermediate_size=expert_mlp_dim(config),
        n_shared_experts=moe.num_shared_experts,
        first_k_dense_replace=moe.first_dense,
        routed_scaling_factor=moe.router_scale,
        n_group=moe.router_groups,
        topk_group=moe.router_topk_groups,
        norm_topk_prob=moe.router_norm_topk,
    )
