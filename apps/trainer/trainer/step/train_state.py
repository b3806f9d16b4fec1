"""The train state: one typed pytree the jitted step reads, donates and returns, and a checkpoint
holds (levanter's ``TrainerState``, torchtitan's ``TrainState``, in tjx's terms)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import chex
import jax
import optax

from tjx import nn
from tjx.optim import FlatParams


@jax.tree_util.register_dataclass
@dataclass(frozen=True, kw_only=True)
class TrainState:
    """What the jitted step reads, donates and returns: a pytree of arrays (or, abstract, of
    ``jax.ShapeDtypeStruct``). A checkpoint holds it as `tree` (``{"params", "opt_state",
    "step"}`` + ``"reference"``, ``"fp8"`` where held): those paths are every checkpoint's since
    the first release.

    The fields are in the order of the dict's sorted keys, so the flattened leaves (the jitted
    program's arguments, donations and shardings) are in the order they were when the state was
    that dict."""

    #: Delayed float8 scaling's state (tjx.nn's `Fp8Meta`: each float8 product's scales and
    #: amax history, a nested dict like ``params``'), advanced by every step; None without it.
    fp8: chex.ArrayTree | None = None
    #: The optimizer's state (tjx.optim's chain: per leaf, or flat buffers; `flat_update`).
    opt_state: optax.OptState
    #: The model's parameters: a nested dict (``nnx.to_pure_dict`` of its ``nnx.Param`` state),
    #: or the flat optimizer's buffers of them (tjx.optim's `FlatParams`: one ``p + u`` a buffer
    #: instead of one a leaf). `param_tree` is the nested dict either way.
    params: chex.ArrayTree | FlatParams
    #: DPO without LoRA: the starting params, frozen, as the reference model (trainer.step.dpo).
    reference: chex.ArrayTree | None = None
    #: Steps taken (int32; replicated on the mesh).
    step: jax.Array

    def param_tree(self) -> chex.ArrayTree:
        """The parameters as the model's nested dict (views of the buffers when they are flat:
        slices inside a jitted function, copies outside one)."""
        return self.params.tree() if isinstance(self.params, FlatParams) else self.params

    def tree(self) -> dict[str, chex.ArrayTree]:
        """The checkpoint's pytree of this state (``"reference"``, ``"fp8"`` only when it holds
        one): the params per leaf however the state holds them, so every checkpoint has the same
        paths."""
        out = {"opt_state": self.opt_state, "params": self.param_tree(), "step": self.step}
        if self.reference is not None:
            out["reference"] = self.reference
        if self.fp8 is not None:
            out["fp8"] = self.fp8
        return out

    def model_tree(self) -> chex.ArrayTree:
        """`param_tree` with the float8 state beside the params (tjx.nn's `join_fp8_meta`): the
        tree the model merges with its other state less the float8 meta (`split_fp8_meta`)."""
        return nn.join_fp8_meta(self.param_tree(), self.fp8)

    @classmethod
    def from_tree(
        cls, tree: Mapping[str, chex.ArrayTree], like: TrainState | None = None
    ) -> TrainState:
        """The state a checkpoint's pytree (`tree`'s) holds, its params flat where ``like``'s are
        (the state it was restored onto)."""
        params = tree["params"]
        if like is not None and isinstance(like.params, FlatParams):
            params = FlatParams.of(params, like.params.layout)
        return cls(
            opt_state=tree["opt_state"],
            params=params,
            reference=tree.get("reference"),
            fp8=tree.get("fp8"),
            step=tree["step"],
        )
