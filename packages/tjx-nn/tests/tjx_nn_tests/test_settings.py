"""config_from_settings: an app's flat model section → the config of its kind, in its words."""

from __future__ import annotations

import re
from typing import Any

import jax.numpy as jnp
import pytest

from tjx.nn import (
    MODEL_KINDS,
    BertConfig,
    EncoderDecoderConfig,
    GPT2Config,
    LlamaConfig,
    Precision,
    TransformerConfig,
    ViTConfig,
    config_from_settings,
)

# A trainer-like model section's defaults: one flat section for every kind, None = kind's own.
APP = {
    "kind": "gpt2",
    "vocab_size": None,
    "max_seq_len": 64,
    "d_model": 32,
    "num_layers": 2,
    "num_heads": 4,
    "num_kv_heads": None,
    "mlp_dim": None,
    "dropout": 0.0,
    "tie_embeddings": True,
    "attention_impl": "auto",
    "scan_layers": False,
    "remat": "none",
    "position": None,
    "relative_buckets": 32,
    "relative_max_distance": 128,
    "param_dtype": "float32",
    "compute_dtype": "float32",
    "use_bias": None,
    "norm_position": None,
    "init_std": None,
    "attention_type": "mha",
    "kv_latent_dim": None,
    "decode_topk": None,
    "image_size": 8,
    "patch_size": 2,
    "num_classes": 10,
}
# What every kind takes of APP (ViT recomputes max_seq_len from its patches).
COMMON = {
    "max_seq_len": 64,
    "d_model": 32,
    "num_layers": 2,
    "num_heads": 4,
    "dropout": 0.0,
    "attention_impl": "auto",
    "scan_layers": False,
    "remat": "none",
    "relative_buckets": 32,
    "relative_max_distance": 128,
    "attention_type": "mha",
}
BY_HAND: dict[str, TransformerConfig] = {
    "gpt2": GPT2Config(**COMMON, tie_embeddings=True, vocab_size=300),
    "llama": LlamaConfig(**COMMON, tie_embeddings=True, vocab_size=300),
    "bert": BertConfig(**COMMON, vocab_size=300),  # tie_embeddings: unused, at the app default
    "vit": ViTConfig(**COMMON, image_size=8, patch_size=2, num_classes=10, num_channels=1),
    "encdec": EncoderDecoderConfig(**COMMON, tie_embeddings=True, vocab_size=300),
}


def settings(kind: str, **changes: Any) -> dict[str, Any]:
    extra = {"num_channels": 1} if kind == "vit" else {}  # the trainer's grey digits
    return {**APP, "kind": kind, **extra, **changes}


def build(kind: str, **changes: Any) -> TransformerConfig:
    return config_from_settings(
        kind, settings(kind, **changes), vocab_size=300, app_defaults=APP, prefix="model"
    )


def error(kind: str, *, prefix: str | None = "model", **changes: Any) -> str:
    with pytest.raises(ValueError) as err:
        config_from_settings(
            kind, settings(kind, **changes), vocab_size=300, app_defaults=APP, prefix=prefix
        )
    return str(err.value)


@pytest.mark.parametrize("kind", list(MODEL_KINDS))
def test_each_kind_equals_its_class_built_by_hand(kind: str) -> None:
    got = build(kind)
    assert type(got) is MODEL_KINDS[kind]
    assert got == BY_HAND[kind]


def test_by_hand_covers_every_kind() -> None:
    assert set(BY_HAND) == set(MODEL_KINDS)


def test_none_keeps_the_kinds_own_default() -> None:
    llama = build("llama")
    assert (llama.position, llama.use_bias, llama.norm) == ("rope", False, "rmsnorm")
    assert build("bert").norm_position == "post"
    assert build("gpt2").init_std == TransformerConfig.init_std
    changed = build("llama", position="learned", use_bias=True, init_std=0.01)
    assert (changed.position, changed.use_bias, changed.init_std) == ("learned", True, 0.01)


def test_an_unused_field_at_the_app_default_is_dropped_a_changed_one_refused() -> None:
    # ViT's head is never tied (class default False): the app's default True is not its value.
    assert build("vit").tie_embeddings is False
    assert build("vit", tie_embeddings=False).tie_embeddings is False  # the class's own value
    assert error("bert", tie_embeddings=False) == (
        "model.tie_embeddings: BERT's MLM head always shares the token embedding; got False, "
        "set it to True"
    )
    assert error("vit", decode_topk=2) == (
        "model.decode_topk: only decoders decode (ViT does not); got 2, set it to None"
    )
    # Not unused by an encoder-decoder: it reaches the class.
    assert build("encdec", decode_topk=3).decode_topk == 3
    # Without app defaults nothing is known to be the app's: the value reaches the class.
    with pytest.raises(ValueError, match=r"^ViTConfig\.tie_embeddings: ViT has no token"):
        config_from_settings("vit", settings("vit"), vocab_size=300)


def test_vocab_comes_from_the_argument_unless_the_settings_set_it() -> None:
    assert build("gpt2").vocab_size == 300
    assert build("gpt2", vocab_size=77).vocab_size == 77
    assert build("bert", vocab_size=77).vocab_size == 77
    assert build("vit").vocab_size == 0  # ViT reads images: the argument is not its vocabulary
    with pytest.raises(ValueError) as err:  # a vocabulary the user set would be ignored
        build("vit", vocab_size=77)
    assert str(err.value) == (
        "model.vocab_size: ViT reads images, not tokens; got 77, set it to None"
    )
    got = config_from_settings("llama", {}, vocab_size=123)
    assert got == LlamaConfig(vocab_size=123)


def test_precision_comes_from_the_dtype_names() -> None:
    got = build("gpt2", param_dtype="bfloat16", compute_dtype="float16").precision
    assert got == Precision(jnp.bfloat16, jnp.float16)
    assert build("llama", compute_dtype="bfloat16").precision == Precision.bf16()
    assert build("gpt2").precision == Precision.fp32()
    # One dtype alone, or a None: float32 for the other; dtype objects are taken too.
    only = config_from_settings("gpt2", {"compute_dtype": jnp.bfloat16}, vocab_size=10)
    assert only.precision == Precision.bf16()
    none = config_from_settings("gpt2", {"param_dtype": None}, vocab_size=10)
    assert none.precision == Precision.fp32()
    # A `precision` key instead of the dtype names passes on like any field.
    assert config_from_settings("gpt2", {"precision": "bf16"}, vocab_size=10).precision == (
        Precision.bf16()
    )
    assert error("gpt2", precision="bf16") == (
        "model.precision: set either it or param_dtype/compute_dtype, not both"
    )
    assert error("gpt2", param_dtype="int32") == (
        "model.param_dtype must be a floating dtype; got int32"
    )
    assert error("gpt2", compute_dtype="float17") == (
        "model.compute_dtype must be a floating dtype; got 'float17'"
    )


def test_keys_that_are_no_field_of_the_class_are_ignored() -> None:
    got = build("gpt2", image_size=9, num_classes=3, param_dtype="float32", unknown=1)
    assert got == BY_HAND["gpt2"]


# The trainer's wording before the packages owned it (model_build._model_keys less YAML's null):
# the reference a prefixed message must equal.
def trainer_words(message: str) -> str:
    classes = "|".join(c.__name__ for c in (*MODEL_KINDS.values(), TransformerConfig))
    ours = re.sub(rf"\b(?:{classes})\.", "model.", message)
    return ours if ours.startswith("model.") else f"model: {ours}"


@pytest.mark.parametrize(
    ("kind", "changes", "message"),
    [
        (
            "gpt2",
            {"d_model": 100, "num_heads": 3},
            "model.d_model: 100 must be divisible by model.num_heads (3) when head_dim is None "
            "(it is then d_model // num_heads)",
        ),
        (
            "llama",
            {"num_heads": 4, "num_kv_heads": 3},
            "model.num_kv_heads: 3 must divide model.num_heads (4); allowed: divisors of 4",
        ),
        ("vit", {"image_size": 9}, "model.patch_size: 2 must divide model.image_size (9)"),
        (
            "bert",
            {"position": "t5"},
            "model.position must be one of ('learned', 'sinusoidal', 'rope', 'alibi', 'none'); "
            "got 't5'",
        ),
        (
            "encdec",
            {"relative_buckets": 5},
            "model.relative_buckets must be an even int >= 4; got 5",
        ),
    ],
)
def test_class_errors_are_prefixed_as_the_trainer_did(
    kind: str, changes: dict[str, Any], message: str
) -> None:
    assert error(kind, **changes) == message
    unprefixed = error(kind, prefix=None, **changes)
    assert not unprefixed.startswith("model")
    assert trainer_words(unprefixed) == message


def test_a_message_naming_no_field_starts_with_the_section() -> None:
    with pytest.raises(ValueError) as ref:
        GPT2Config(precision=3)
    assert str(ref.value).startswith("precision must be a Precision or one of")
    with pytest.raises(ValueError) as err:
        config_from_settings("gpt2", {"precision": 3}, vocab_size=10, prefix="model")
    assert str(err.value) == f"model: {ref.value}"


def test_without_prefix_the_class_message_is_unchanged() -> None:
    with pytest.raises(ValueError) as ref:
        GPT2Config(d_model=100, num_heads=3, vocab_size=10)
    with pytest.raises(ValueError) as err:
        config_from_settings("gpt2", {"d_model": 100, "num_heads": 3}, vocab_size=10)
    assert str(err.value) == str(ref.value)
    assert str(err.value).startswith("GPT2Config.d_model: ")


def test_an_unknown_kind_is_refused() -> None:
    allowed = "('gpt2', 'llama', 'bert', 'vit', 'encdec')"
    with pytest.raises(ValueError) as err:
        config_from_settings("gpt3", {}, vocab_size=10, prefix="model")
    assert str(err.value) == f"model.kind must be one of {allowed}; got 'gpt3'"
    with pytest.raises(ValueError) as err:
        config_from_settings("gpt3", {}, vocab_size=10)
    assert str(err.value) == f"kind must be one of {allowed}; got 'gpt3'"
