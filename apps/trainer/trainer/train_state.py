"""The train state: one typed pytree the jitted step reads, donates and returns, and a checkpoint
holds (levanter's ``TrainerState``, torchtitan's ``TrainState``, in tjx's terms)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import chex
import jax
import optax


@jax.tree_util.register_dataclass
@dataclass(frozen=True, kw_only=True)
class TrainState:
    """What the jitted step reads, donates and returns: a pytree of arrays (or, abstract, of
    ``jax.ShapeDtypeStruct``). A checkpoint holds it as `tree` (``{"params", "opt_state",
    "step"}`` + ``"reference"``): those paths are every checkpoint's since the first release.

    The fields are in the order of the dict's sorted keys, so the flattened leaves (the jitted
    program's arguments, donations and shardings) are in the order they were when the state was
    that dict."""

    #: The optimizer's state (tjx.optim's chain: per leaf, or flat buffers; `flat_update`).
    opt_state: optax.OptState
    #: The model's parameters, a nested dict (``nnx.to_pure_dict`` of its ``nnx.Param`` state).
    params: chex.ArrayTree
    #: DPO without LoRA: the starting params, frozen, as the reference model (trainer.dpo).
    reference: chex.ArrayTree | None = None
    #: Steps taken (int32; replicated on the mesh).
    step: jax.Array

    def tree(self) -> dict[str, chex.ArrayTree]:
        """The checkpoint's pytree of this state (``"reference"`` only when it holds one)."""
        out = {"opt_state": self.opt_state, "params": self.params, "step": self.step}
        if self.reference is not None:
            out["reference"] = self.reference
        return out

    @classmethod
    def from_tree(cls, tree: Mapping[str, chex.ArrayTree]) -> TrainState:
        """The state a checkpoint's pytree (`tree`'s) holds."""
        return cls(
            opt_state=tree["opt_state"],
            params=tree["params"],
            reference=tree.get("reference"),
            step=tree["step"],
        )
