"""``build_model``: construct the model a config describes; ``MODEL_KINDS``: the config class of
each model kind's name."""

from __future__ import annotations

from flax import nnx

from tjx.nn.bert import BERT
from tjx.nn.configs import GPT2Config, LlamaConfig, TransformerConfig
from tjx.nn.decoder import GPT2, DecoderLM, Llama
from tjx.nn.encdec import EncoderDecoder
from tjx.nn.encoder_configs import BertConfig, EncoderDecoderConfig, ViTConfig
from tjx.nn.kernel_choice import ModelAttention
from tjx.nn.vit import ViT

#: A model kind's name (what a config file says, ``kind: gpt2``) → its config class.
MODEL_KINDS: dict[str, type[TransformerConfig]] = {
    "gpt2": GPT2Config,
    "llama": LlamaConfig,
    "bert": BertConfig,
    "vit": ViTConfig,
    "encdec": EncoderDecoderConfig,
}

_MODELS: list[tuple[type[TransformerConfig], type[nnx.Module]]] = [
    (GPT2Config, GPT2),
    (LlamaConfig, Llama),
    (BertConfig, BERT),
    (ViTConfig, ViT),
    (EncoderDecoderConfig, EncoderDecoder),
]


def build_model(
    config: TransformerConfig, *, rngs: nnx.Rngs, attention: ModelAttention | None = None
) -> nnx.Module:
    """``GPT2``/``Llama``/``BERT``/``ViT``/``EncoderDecoder`` for the matching config type; a
    plain ``TransformerConfig`` builds a ``DecoderLM``.

    Parameters
    ----------
    config : TransformerConfig
        A ``GPT2Config``, ``LlamaConfig``, ``BertConfig``, ``ViTConfig``,
        ``EncoderDecoderConfig`` or plain ``TransformerConfig``.
    rngs : nnx.Rngs
        Initialisation keys.
    attention : ModelAttention, optional
        The kernels its attention layers run, resolved once where the run builds its models
        (`resolve_attention` of ``config``; its layers resolve nothing); None: resolved as the
        model is built.

    Returns
    -------
    nnx.Module
        The model.

    Raises
    ------
    ValueError
        Any other config type (the message lists the supported ones).
    """
    for config_type, model_type in _MODELS:
        if type(config) is config_type:
            return model_type(config, rngs=rngs, attention=attention)  # type: ignore[call-arg]
    if type(config) is TransformerConfig:
        return DecoderLM(config, rngs=rngs, attention=attention)
    allowed = ", ".join(t.__name__ for t, _ in _MODELS)
    raise ValueError(
        f"build_model: config must be one of {allowed}, TransformerConfig; got "
        f"{type(config).__name__}"
    )
