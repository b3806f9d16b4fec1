"""Tiny configs and helpers shared by the tjx.nn tests (d_model 32, 2 layers, vocab 64)."""

import numpy as np
import pytest
from flax import nnx
from safetensors import safe_open

from tjx import nn as tnn

TINY = dict(vocab_size=64, max_seq_len=16, d_model=32, num_layers=2, num_heads=4)


# Built by make_config: a dotted key (``"position.kind"``) sets one setting of a section over the
# section given whole, so overlays of different settings of one section do not replace each other.
def gpt2_tiny(**kw) -> tnn.GPT2Config:
    return tnn.make_config(tnn.GPT2Config, {**TINY, **kw})


def llama_tiny(**kw) -> tnn.LlamaConfig:
    return tnn.make_config(
        tnn.LlamaConfig, {**TINY, "num_kv_heads": 2, "mlp": tnn.MLPConfig(dim=48), **kw}
    )


def mtp_refusal(folder, depths: int) -> str:
    """The one line that refuses ``mtp.depths=depths`` over the saved ``folder``, raised alike as
    its config is read (a plan) and as its weights load (each a ``ValueError`` of one line)."""
    said = []
    for read in (tnn.read_hf_config, tnn.load_hf):
        with pytest.raises(ValueError, match=r"^[^\n]*$") as info:
            read(folder, **{"mtp.depths": depths})
        said.append(str(info.value))
    assert said[0] == said[1], said
    return said[0]


def build(cfg, seed: int = 0):
    """``build_model(cfg)`` eagerly (eager op compiles are cached across the whole test run)."""
    return tnn.build_model(cfg, rngs=nnx.Rngs(seed))


def param_grads(model, loss_fn):
    """Gradients of ``loss_fn(model)`` w.r.t. every nnx.Param, as a flat dict name → array."""
    grads = nnx.grad(loss_fn)(model)
    flat = {}
    for path, var in nnx.to_flat_state(grads):
        flat[".".join(map(str, path))] = np.asarray(var.get_value())
    return flat


def most_reads_alive(monkeypatch, folder) -> tuple[int, int]:
    """``load_hf(folder)`` with each checkpoint read tracked: the most reads alive at once, and
    how many are still alive after the import (0: every read was let go)."""
    import weakref

    from tjx.nn.hf.reading import LazyWeights

    live: dict[int, int] = {}
    most = [0]
    read = LazyWeights.get

    def get(self, name):
        value = read(self, name)
        live[id(value)] = value.nbytes
        weakref.finalize(value, live.pop, id(value), None)
        most[0] = max(most[0], len(live))
        return value

    monkeypatch.setattr(LazyWeights, "get", get)
    tnn.load_hf(folder)
    return most[0], len(live)


def saved_random(folder, config: tnn.LlamaConfig):
    """A ``Llama`` of ``config`` with every parameter moved off its initial value (norms and gates
    start at 0 or 1: random, so a swapped tensor shows), saved with ``save_hf`` to ``folder``:
    the model and the written tensors by name."""
    model = tnn.Llama(config, rngs=nnx.Rngs(0))
    rs = np.random.RandomState(0)
    flat = tnn.get_flat_params(model)
    tnn.set_flat_params(model, {k: v + 0.1 * rs.randn(*v.shape) for k, v in flat.items()})
    tnn.save_hf(model, folder)
    with safe_open(str(folder / "model.safetensors"), "np") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    return model, tensors
