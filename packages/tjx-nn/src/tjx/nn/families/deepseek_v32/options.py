"""DeepSeek Sparse Attention's settings (`IndexerSettings`): the lightning indexer's shape and
top-k, and how a run trains it. They sit in the ``mla`` section (``model.mla.index_topk``, the
names of DeepSeek-V3.2's ``config.json``): `tjx.nn.mla_config.MLAConfig` takes them from this
class, checks them through `check_indexer`, and the shared code reads them only through the
section's generic key-selection hooks (`IndexerSettings.key_selection`,
`IndexerSettings.selection_cache`). Of tjx.nn this module imports nothing: the model config
imports it without the indexer's layer.
"""

# `setting()` returns dataclasses.field objects (with the metadata apps read).
# ruff: noqa: RUF009
from __future__ import annotations

from dataclasses import dataclass

from tjx.core.config.values import positive
from tjx.core.fields import setting

#: The indexer's shape and top-k: set together, on DeepSeek's MLA with a low-rank query, or all
#: None (off).
SPARSE_MLA = ("index_topk", "index_n_heads", "index_head_dim")
#: The indexer loss's forms: over each query's selected keys (the sparse stage, what a fine-tune
#: of the released model trains) or over every key it may see (the dense warm-up).
INDEX_LOSSES = ("sparse", "dense")
#: The cache entry of the indexer's keys (``[L, b, T, index_head_dim]``).
INDEX_KEY = "index_key"


@dataclass(frozen=True, kw_only=True)
class IndexerSettings:
    """DeepSeek Sparse Attention's fields of the ``mla`` section (`tjx.nn.mla_config.MLAConfig`
    inherits them, so their keys stay ``mla.index_*``)."""

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

    @property
    def key_selection(self) -> str | None:
        """The name of the part that picks each query's keys (for the refusals of what cannot
        hold a per-query key set: the fused kernels, a split sequence), or None: every key."""
        return "DeepSeek Sparse Attention (mla.index_topk)" if self.index_topk else None

    @property
    def selection_cache(self) -> dict[str, int]:
        """The cache entries the key selection keeps per layer and token: name → width."""
        return {INDEX_KEY: self.index_head_dim} if self.index_head_dim is not None else {}


def check_indexer(
    settings: IndexerSettings, cls: str, q_lora_rank: int | None, qk_rope_head_dim: int | None
) -> None:
    """Check the indexer's settings and what they need of DeepSeek's MLA (its low-rank query
    ``q_lora_rank``, the ``qk_rope_head_dim`` dims its RoPE turns).

    Raises
    ------
    ValueError
        One line naming ``<cls>.<field>`` and the fix.
    """
    sparse = [getattr(settings, name) for name in SPARSE_MLA]
    if any(v is not None for v in sparse):
        for name, value in zip(SPARSE_MLA, sparse, strict=True):
            if value is None:
                raise ValueError(
                    f"{cls}.{name}: DeepSeek Sparse Attention sets {', '.join(SPARSE_MLA)} "
                    "together; set it or set all three to None"
                )
            positive(cls, name, value)
        if q_lora_rank is None or qk_rope_head_dim is None:
            raise ValueError(
                f"{cls}.index_topk: DeepSeek Sparse Attention's indexer reads DeepSeek's "
                "low-rank query; set q_lora_rank and qk_rope_head_dim, or index_* to None"
            )
        dim = settings.index_head_dim
        if dim is not None and dim < qk_rope_head_dim:
            raise ValueError(
                f"{cls}.index_head_dim: {dim} is narrower than the "
                f"{qk_rope_head_dim} dims its RoPE turns (qk_rope_head_dim); widen it"
            )
    if settings.index_loss not in INDEX_LOSSES:
        raise ValueError(
            f"{cls}.index_loss: {settings.index_loss!r} is not one of {', '.join(INDEX_LOSSES)}"
        )
    # A number >= 0 here; that the model has an indexer (and MoE statistics to carry its
    # loss) is the built model's check (`tjx.nn.cross_checks.check_index_loss`): a run
    # started from a checkpoint sets it on a config whose architecture comes later.
    if not settings.index_loss_weight >= 0.0:
        raise ValueError(
            f"{cls}.index_loss_weight: {settings.index_loss_weight!r} must be >= 0 (0: off)"
        )
