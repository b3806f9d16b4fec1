"""What a model config must be for a run that splits it: into pipeline stages
(``decoder_stages``) or each sequence over devices (``sequence_parallel``).

The model refuses these only while it traces (``decoder_stages``, ``split_self_attention``); an
app checks them here first, while reading its config, so a bad setting is one line before
anything is built. The messages name the settings as an app's config tree does (``model.*`` for
the model's fields, ``mesh.*`` for the split), with the fix.
"""

from __future__ import annotations

from typing import Any

from tjx.nn.family_config import SHARED_KV_KEY, shared_kv_layers
from tjx.nn.objectives import objective_of
from tjx.nn.registry import MODEL_KINDS

__all__ = ["check_pipelinable", "check_sequence_split", "model_kind"]


def model_kind(config: Any) -> str:
    """``config``'s model kind: the key of ``MODEL_KINDS`` holding its class (else its name)."""
    return next((k for k, c in MODEL_KINDS.items() if type(config) is c), type(config).__name__)


def check_pipelinable(config: Any) -> None:
    """Raise ``ValueError`` unless a pipeline can cut ``config``'s model into stages.

    Parameters
    ----------
    config : TransformerConfig
        The model's config: a decoder LM whose layers are stacked (``scan_layers``: a stage is a
        slice of them), without dropout (the stages draw no keys), MoE layers or multi-token
        prediction.
    """
    if objective_of(config).name != "lm":
        raise ValueError(
            f"only decoders (gpt2, llama) are pipelined; model.kind is {model_kind(config)!r}"
        )
    if not config.scan_layers:
        raise ValueError("needs model.scan_layers=true (a stage is a slice of the stacked layers)")
    if config.dropout != 0.0:
        raise ValueError("needs model.dropout=0 (no dropout keys per stage)")
    if config.moe.num_experts:
        raise ValueError(
            f"MoE layers are not pipelined (model.moe.num_experts={config.moe.num_experts}); set "
            "mesh.pipeline=1 (mesh.expert splits the experts instead)"
        )
    if config.mtp.depths:
        raise ValueError(
            f"multi-token prediction is not pipelined (model.mtp.depths={config.mtp.depths}); "
            "set mesh.pipeline=1 or model.mtp.depths=0"
        )


def check_sequence_split(config: Any, ways: int) -> None:
    """Raise ``ValueError`` unless ``config``'s model can run with each sequence split over
    ``ways`` devices (context parallelism; 1: nothing to check).

    Parameters
    ----------
    config : TransformerConfig
        A decoder LM, without an additive attention bias (alibi, t5), attention dropout,
        attention sinks, delta layers, layers sharing an earlier layer's keys and values or
        chunked attention, whose ``attention_impl`` has separate forward and backward halves (not
        cudnn or tokamax) and, with a sliding window, masks by the tokens' original places (not
        pallas).
        The message starts with the key to change.
    ways : int
        Devices per sequence (``mesh.context``).
    """
    if ways == 1:
        return
    split = f"with mesh.context={ways} (each sequence split over {ways} devices)"
    if objective_of(config).name != "lm":
        raise ValueError(
            f"mesh.context: context parallelism splits decoder language models; model.kind is "
            f"{model_kind(config)!r}: set mesh.context=1"
        )
    if config.attention_impl == "cudnn":
        raise ValueError(
            f"model.attention_impl: cudnn cannot attend across a split sequence (jax's cuDNN "
            f"call has no separate forward and backward) {split}; use auto, pallas or xla"
        )
    if config.attention_impl == "tokamax":
        raise ValueError(
            f"model.attention_impl: tokamax cannot attend across a split sequence (tjx runs "
            f"tokamax's kernel whole, with no separate forward and backward halves) {split}; "
            "use auto, pallas or xla"
        )
    if config.position.kind in ("alibi", "t5") or config.attention.dropout > 0:
        key = (
            "model.position.kind"
            if config.position.kind in ("alibi", "t5")
            else "model.attention.dropout"
        )
        raise ValueError(
            f"{key}: a split sequence takes no additive attention bias (alibi, t5) and no "
            f"attention dropout {split}; set model.position.kind=rope and model.attention.dropout=0"
        )
    if config.mtp.depths:
        raise ValueError(
            f"model.mtp.depths: multi-token prediction shifts tokens along the sequence, which "
            f"a split cuts {split}; set mesh.context=1 or model.mtp.depths=0"
        )
    if config.attention.sinks:
        raise ValueError(
            f"model.attention.sinks: the split sequence's block kernels add no attention sinks "
            f"(gpt-oss) {split}; set mesh.context=1"
        )
    # What the layers refuse while they trace (tjx.nn.block's delta mixing, attention's shared
    # keys and chunks), said here from the config before anything is built.
    if "delta" in config.layer_mixers():
        raise ValueError(
            f"model.mixer_pattern: delta layers (Gated DeltaNet) carry a recurrent state along "
            f"the sequence, which would restart on each device's part {split}; set "
            "mesh.context=1"
        )
    if shared_kv_layers(config):
        raise ValueError(
            f"model.{SHARED_KV_KEY}: layers that read an earlier layer's keys and values "
            f"({shared_kv_layers(config)}) do not run on a split sequence {split}; "
            "set mesh.context=1"
        )
    if config.attention.chunk is not None and any(config.layer_locals()):
        raise ValueError(
            f"model.attention.chunk: the split sequence's block kernels attend without chunks "
            f"{split}; set mesh.context=1"
        )
    if config.attention_impl == "pallas" and any(w is not None for w in config.layer_windows()):
        raise ValueError(
            f"model.attention_impl: pallas cannot apply model.attention.sliding_window across a "
            f"split sequence (its masks use the tile's own positions) {split}; use auto or xla"
        )
