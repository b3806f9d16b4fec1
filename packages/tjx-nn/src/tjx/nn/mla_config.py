"""The multi-head latent attention section of a model config (`MLAConfig`): the latent's size
and DeepSeek's low-rank query, shared rotated key and value width (:mod:`tjx.nn.mla` builds the
layer from them). Only ``attention.type="mla"`` reads it; the model config checks that, and what
the section needs of the rest of the model (RoPE, a key per query head, ``head_dim``). DeepSeek
Sparse Attention's indexer settings (``index_*``) are its family folder's, inherited here.
"""

# `setting()` returns dataclasses.field objects (with the metadata apps read).
# ruff: noqa: RUF009
from __future__ import annotations

from dataclasses import dataclass

from tjx.core.config.values import positive
from tjx.core.fields import setting
from tjx.nn.families.deepseek_v32.options import IndexerSettings, check_indexer

#: DeepSeek's settings: only MLA with a shared rotated key (``qk_rope_head_dim``) reads them.
DEEPSEEK_MLA = ("q_lora_rank", "qk_rope_head_dim", "v_head_dim")


@dataclass(frozen=True, kw_only=True)
class _LatentSizes:
    """The latent's and DeepSeek's sizes: the section's first fields (`MLAConfig`)."""

    kv_latent_dim: int | None = setting(None, help="attention.type=mla: the latent's size")
    q_lora_rank: int | None = setting(None, help="low-rank query width (DeepSeek-V3)")
    qk_rope_head_dim: int | None = setting(None, help="head_dim's shared rotated tail")
    v_head_dim: int | None = setting(None, help="a value head's width; None: head_dim")


# Two bases so that the indexer's fields come between the sizes and the latent norms' epsilon:
# the section's field order is model.json's and the settings tables' order.
@dataclass(frozen=True, kw_only=True)
class MLAConfig(IndexerSettings, _LatentSizes):
    """Multi-head latent attention's sizes (``model.mla``): keys and values from one cached
    low-rank latent per token, with DeepSeek Sparse Attention's indexer settings
    (`tjx.nn.families.deepseek_v32.options.IndexerSettings`: ``index_*``).

    Every bad value raises ``ValueError`` at construction naming ``MLAConfig.<field>``.
    """

    latent_norm_eps: float | None = setting(
        None, help="DeepSeek's q/kv latent norms' epsilon (HF's: 1e-6); None: norm.eps"
    )

    def __post_init__(self) -> None:
        cls = type(self).__name__
        for name in ("kv_latent_dim", *DEEPSEEK_MLA):
            value = getattr(self, name)
            if value is None:
                continue
            positive(cls, name, value)
            if name in ("q_lora_rank", "v_head_dim") and self.qk_rope_head_dim is None:
                raise ValueError(
                    f"{cls}.{name}: only DeepSeek's MLA (qk_rope_head_dim set) uses it; set "
                    f"qk_rope_head_dim or set {name} to None"
                )
        check_indexer(self, cls, self.q_lora_rank, self.qk_rope_head_dim)
        eps = self.latent_norm_eps
        if eps is not None and (eps <= 0 or self.qk_rope_head_dim is None):
            # transformers' DeepSeek-V3 keeps its latent norms at 1e-6 whatever rms_norm_eps says
            # (1e-5 in some releases): only DeepSeek's MLA has those norms.
            raise ValueError(
                f"{cls}.latent_norm_eps: {eps!r} must be > 0 and is read only by DeepSeek's MLA "
                "(qk_rope_head_dim set); set it to None (the model's norm.eps)"
            )


#: MLA's old flat keys in a model section → their key in ``mla`` (the same names).
FLAT_MLA_KEYS = {name: name for name in ("kv_latent_dim", *DEEPSEEK_MLA)}
