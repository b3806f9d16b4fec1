"""The multi-head latent attention section of a model config (`MLAConfig`): the latent's size
and DeepSeek's low-rank query, shared rotated key and value width (:mod:`tjx.nn.mla` builds the
layer from them). Only ``attention.type="mla"`` reads it; the model config checks that, and what
the section needs of the rest of the model (RoPE, a key per query head, ``head_dim``).
"""

# `setting()` returns dataclasses.field objects (with the metadata apps read).
# ruff: noqa: RUF009
from __future__ import annotations

from dataclasses import dataclass

from tjx.core.config.values import positive
from tjx.core.fields import setting

#: DeepSeek's settings: only MLA with a shared rotated key (``qk_rope_head_dim``) reads them.
DEEPSEEK_MLA = ("q_lora_rank", "qk_rope_head_dim", "v_head_dim")
#: DeepSeek Sparse Attention's lightning indexer (DeepSeek-V3.2, :mod:`tjx.nn.families.
#: deepseek_v32`): set together, on DeepSeek's MLA with a low-rank query, or all None (off).
SPARSE_MLA = ("index_topk", "index_n_heads", "index_head_dim")
#: The indexer loss's forms: over each query's selected keys (the sparse stage, what a fine-tune
#: of the released model trains) or over every key it may see (the dense warm-up).
INDEX_LOSSES = ("sparse", "dense")


@dataclass(frozen=True, kw_only=True)
class MLAConfig:
    """Multi-head latent attention's sizes (``model.mla``): keys and values from one cached
    low-rank latent per token.

    Every bad value raises ``ValueError`` at construction naming ``MLAConfig.<field>``.
    """

    kv_latent_dim: int | None = setting(None, help="attention.type=mla: the latent's size")
    q_lora_rank: int | None = setting(None, help="low-rank query width (DeepSeek-V3)")
    qk_rope_head_dim: int | None = setting(None, help="head_dim's shared rotated tail")
    v_head_dim: int | None = setting(None, help="a value head's width; None: head_dim")
    index_topk: int | None = setting(
        None, help="DeepSeek Sparse Attention: keys each query keeps (its indexer's top-k)"
    )
    index_n_heads: int | None = setting(None, help="DeepSeek Sparse Attention: indexer heads")
    index_head_dim: int | None = setting(
        None, help="DeepSeek Sparse Attention: an indexer head's width"
    )
    index_loss_weight: float = setting(
        0.0,
        help="DeepSeek Sparse Attention: the indexer's KL loss weight in the training loss "
        "(0: off, the indexer stays as loaded)",
    )
    index_loss: str = setting(
        "sparse",
        help="the indexer loss over each query's selected keys (sparse) or all it sees (dense)",
        choices=INDEX_LOSSES,
    )
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
        sparse = [getattr(self, name) for name in SPARSE_MLA]
        if any(v is not None for v in sparse):
            for name, value in zip(SPARSE_MLA, sparse, strict=True):
                if value is None:
                    raise ValueError(
                        f"{cls}.{name}: DeepSeek Sparse Attention sets {', '.join(SPARSE_MLA)} "
                        "together; set it or set all three to None"
                    )
                positive(cls, name, value)
            if self.q_lora_rank is None or self.qk_rope_head_dim is None:
                raise ValueError(
                    f"{cls}.index_topk: DeepSeek Sparse Attention's indexer reads DeepSeek's "
                    "low-rank query; set q_lora_rank and qk_rope_head_dim, or index_* to None"
                )
            if self.index_head_dim is not None and self.index_head_dim < self.qk_rope_head_dim:
                raise ValueError(
                    f"{cls}.index_head_dim: {self.index_head_dim} is narrower than the "
                    f"{self.qk_rope_head_dim} dims its RoPE turns (qk_rope_head_dim); widen it"
                )
        if self.index_loss not in INDEX_LOSSES:
            raise ValueError(
                f"{cls}.index_loss: {self.index_loss!r} is not one of {', '.join(INDEX_LOSSES)}"
            )
        # A number >= 0 here; that the model has an indexer (and MoE statistics to carry its
        # loss) is the built model's check (`tjx.nn.cross_checks.check_index_loss`): a run
        # started from a checkpoint sets it on a config whose architecture comes later.
        if not self.index_loss_weight >= 0.0:
            raise ValueError(
                f"{cls}.index_loss_weight: {self.index_loss_weight!r} must be >= 0 (0: off)"
            )
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
