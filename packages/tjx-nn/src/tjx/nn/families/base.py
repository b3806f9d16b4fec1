"""`Family`: what a family folder declares once for the shared code (the Hugging Face loader and
exporter, a start's fixed settings), so that the shared modules look a family up instead of
naming it."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tjx.nn.configs import LlamaConfig
from tjx.nn.hf.keys import Spec
from tjx.nn.hf.mapping import HFMapping

#: A tensor mapping made when it is asked for: a plan reads a checkpoint's config alone, and a
#: large release's mapping (a name per expert and projection) takes seconds to build.
MappingOf = Callable[[], HFMapping]
#: ``read``: (config.json dict, model type, overrides) → (config, its tensor mapping on demand).
Read = Callable[[Mapping[str, Any], str, Mapping[str, Any]], tuple[LlamaConfig, MappingOf]]
#: ``write``: config → (config.json dict, tensor mapping).
Write = Callable[[LlamaConfig], tuple[dict[str, Any], HFMapping]]


def _same(stored: str) -> str:
    return stored


def reads(
    config_from_hf: Callable[..., LlamaConfig], mapping: Callable[[LlamaConfig], HFMapping]
) -> Read:
    """The ``read`` of a family whose folders are read alike whatever their model type: the
    config from ``config.json`` (``config_from_hf(hf, **overrides)``), its tensors from the
    config (``mapping``)."""

    def read(
        hf: Mapping[str, Any], model_type: str, overrides: Mapping[str, Any]
    ) -> tuple[LlamaConfig, MappingOf]:
        config = config_from_hf(hf, **overrides)
        return config, lambda: mapping(config)

    return read


def reads_text_model(
    config_from_hf: Callable[..., LlamaConfig],
    mapping: Callable[[LlamaConfig], HFMapping],
    *,
    image_text: str,
    text_config: Callable[[Mapping[str, Any]], Mapping[str, Any]],
    skip: Callable[[Callable[[str], bool]], Callable[[str], bool]],
) -> Read:
    """The ``read`` of a family whose image-text folders (model type ``image_text``) are read as
    their text model: the config of ``text_config(hf)``, the same tensor mapping with ``skip``
    added to its ignored names (the towers beside the language model, said in one line); its
    text model's folders as `reads` reads them."""
    text_model = reads(config_from_hf, mapping)

    def read(
        hf: Mapping[str, Any], model_type: str, overrides: Mapping[str, Any]
    ) -> tuple[LlamaConfig, MappingOf]:
        if model_type != image_text:
            return text_model(hf, model_type, overrides)
        config, text = text_model(text_config(hf), model_type, overrides)

        def skipped() -> HFMapping:
            mapping = text()
            return replace(mapping, ignored=skip(mapping.ignored))

        return config, skipped

    return read


def writes(
    config_to_hf: Callable[[LlamaConfig], dict[str, Any]],
    mapping: Callable[[LlamaConfig], HFMapping],
) -> Write:
    """The ``write`` of a family: ``config.json`` (``config_to_hf``) and the tensor mapping
    (``mapping``), each of the config alone."""

    def write(config: LlamaConfig) -> tuple[dict[str, Any], HFMapping]:
        return config_to_hf(config), mapping(config)

    return write


@dataclass(frozen=True)
class Family:
    """One decoder family, as the shared code sees it (a ``Llama`` with some switches set).

    Attributes
    ----------
    name : str
        The family's folder under ``tjx.nn.families``.
    model_types : tuple of str
        The ``config.json`` model types it reads (the text model's first: the one it saves).
    spec : Spec
        Every ``config.json`` key the text model's import reads (`tjx.nn.hf.keys`).
    read : callable
        ``(config.json dict, model_type, overrides) -> (config, mapping)``: the tjx config of a
        checkpoint of one of ``model_types``, refusing what tjx would ignore (one line each), and
        its tensor mapping as a function of no arguments (`MappingOf`: built when asked for).
    claims : callable
        ``(config, asked model_type or None) -> bool``: whether ``save_hf`` saves ``config`` as
        this family (asked for, or a switch only this family computes is on); raises for a
        model type that cannot express those switches.
    write : callable
        ``config -> (config.json dict, mapping)`` of a config it claims.
    stored_names : Mapping
        model type → a stored tensor's name → the text model's name (image-text folders, whose
        language model sits under a prefix); the others store the text model's names.
    fixed : tuple of str
        The ``LlamaConfig`` fields of its switches, which a checkpoint of it fixes (a run that
        starts from one may not change them; `tjx.nn.hf.start.HF_LLAMA_FIXED`).
    layout : callable or None
        ``(config.json dict, the folder's tensor names) -> config.json dict`` for ``read``: what
        the names say that the config does not, where a family's folders come in several
        layouts (Qwen3.5-MoE's experts: fused as published, one per expert as transformers
        saves them); None: the config says it all.
    saves_as_read : bool
        Whether a model read from one of ``model_types`` saves back as ``model_types[0]`` when
        no type is asked (`tjx.nn.families.registry.saved_as`): true where ``claims`` holds only
        when asked, its switches computing what another family saves by default.
    reads_mtp : bool
        Whether ``read`` maps multi-token-prediction layers and checks ``mtp.depths`` against
        what a checkpoint stores itself (`tjx.nn.hf.mtp_tensors.stored_depths`); False: the
        loader refuses any ``mtp.depths`` above 0 for its checkpoints
        (`tjx.nn.hf.mtp_tensors.reads_no_mtp`), which its mapping could not fill.
    """

    name: str
    model_types: tuple[str, ...]
    spec: Spec
    read: Read
    claims: Callable[[LlamaConfig, str | None], bool]
    write: Write
    stored_names: Mapping[str, Callable[[str], str]] = field(default_factory=dict)
    fixed: tuple[str, ...] = ()
    layout: Callable[[Mapping[str, Any], Collection[str]], dict[str, Any]] | None = None
    saves_as_read: bool = False
    reads_mtp: bool = False

    def text_name(self, model_type: str) -> Callable[[str], str]:
        """The stored name → text model name of a folder of ``model_type``."""
        return self.stored_names.get(model_type, _same)
