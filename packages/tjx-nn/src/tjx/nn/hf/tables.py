"""An `HFMapping` under construction: its three tables and the correspondences most tensors are.

Every family's mapping module fills the same three tables (``shapes``, ``to_tjx``, ``to_hf``: see
`HFMapping`) with the same few kinds of correspondence, written here once:

* ``same``: the array itself on both sides (embeddings, norm scales, biases of one shape);
* ``linear``: an ``nn.Linear``'s ``[out, in]`` weight ↔ a tjx ``Dense`` kernel ``[*in, *out]``
  (heads split out: ``query.kernel`` is ``[d_model, heads, head_dim]``), and its bias if asked;
* ``swiglu``: a SwiGLU MLP's ``gate_proj``, ``up_proj`` and ``down_proj`` ↔ tjx's ``fc_gate``,
  ``fc_in`` and ``fc_out``;
* ``fused``: one HF weight holding several tjx kernels' rows one after another (Phi-3's
  ``qkv_proj``), split on load and joined on export;
* ``fused_experts``: transformers' fused experts of a layer (``gate_up_proj`` ``[E, 2f, d]``,
  ``down_proj`` ``[E, d, f]``), as some family folders' checkpoints store them.

A module with a layout of its own (DeepSeek's reordered rotary rows, gpt-oss's interleaved
experts, Qwen3-Next's grouped delta projections) writes those entries itself, into the same
tables.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from tjx.nn.configs import LlamaConfig
from tjx.nn.hf.mapping import HFMapping, Read, take

Convert = Callable[[Read], np.ndarray]


def linear_in(hf: str, shape: tuple[int, ...]) -> Convert:
    """HF ``[out, in]`` → tjx ``[*in, *out]`` (``shape`` is tjx's kernel shape)."""
    return lambda read: read(hf).T.reshape(shape)


def linear_out(tjx: str, out_features: int) -> Convert:
    """tjx ``[*in, *out]`` kernel → HF ``[out, in]``."""
    return lambda read: read(tjx).reshape(-1, out_features).T


def transposed(name: str) -> Convert:
    """A 2-D tensor transposed (an ``[out, in]`` weight ↔ an ``[in, out]`` kernel)."""
    return lambda read: read(name).T


def rows(hf: str, start: int, stop: int, shape: tuple[int, ...]) -> Convert:
    """Rows ``[start, stop)`` of a fused HF ``[out, in]`` weight as a tjx ``[in, *out]`` kernel."""
    return lambda read: read(hf)[start:stop].T.reshape(shape)


def joined_rows(parts: list[tuple[str, int]]) -> Convert:
    """The fused HF weight from tjx kernels ``(name, out_features)``, rows in that order."""
    return lambda read: np.concatenate([read(t).reshape(-1, n).T for t, n in parts], axis=0)


def _expert_rows(hf: str, start: int, stop: int) -> Convert:
    """Rows ``[start, stop)`` of each expert's HF ``[E, out, in]`` weight as a tjx ``[E, in, n]``
    kernel."""
    return lambda read: read(hf)[:, start:stop].transpose(0, 2, 1)


def _joined_experts(*names: str) -> Convert:
    """tjx's ``[E, in, n]`` expert kernels, their rows joined: the fused HF ``[E, Σn, in]``."""
    return lambda read: np.concatenate([read(n) for n in names], axis=-1).transpose(0, 2, 1)


def llama_sizes(c: LlamaConfig) -> tuple[int, int, int, int, int, int]:
    """``(d_model, heads, kv_heads, head_dim, mlp width, vocab)`` of a LLaMA-shaped ``c``, the
    sizes every layer's tensor shapes are made of (``c`` resolved: none of them unset)."""
    assert c.head_dim is not None and c.num_kv_heads is not None and c.mlp.dim is not None
    return c.d_model, c.num_heads, c.num_kv_heads, c.head_dim, c.mlp.dim, c.vocab_size


@dataclass
class Tables:
    """The three tables of an `HFMapping` being built (HF name → shape, tjx name → converter,
    HF name → converter)."""

    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    to_tjx: dict[str, Convert] = field(default_factory=dict)
    to_hf: dict[str, Convert] = field(default_factory=dict)

    @classmethod
    def of(cls, mapping: HFMapping) -> Tables:
        """Copies of ``mapping``'s tables, to change (a family built on another's)."""
        return cls(dict(mapping.shapes), dict(mapping.to_tjx), dict(mapping.to_hf))

    def same(self, hf: str, tjx: str, shape: tuple[int, ...]) -> None:
        """``hf`` and ``tjx`` hold the same array of ``shape``."""
        self.shapes[hf] = shape
        self.to_tjx[tjx] = take(hf)
        self.to_hf[hf] = take(tjx)

    def linear(
        self,
        hf: str,
        tjx: str,
        in_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
        *,
        bias: bool = False,
    ) -> None:
        """An ``nn.Linear`` ``hf`` (``.weight`` ``[out, in]``, and ``.bias`` ``[out]`` with
        ``bias``) ↔ the tjx ``Dense`` ``tjx`` (``.kernel`` ``[*in_shape, *out_shape]``)."""
        n_in, n_out = int(np.prod(in_shape)), int(np.prod(out_shape))
        self.shapes[hf + ".weight"] = (n_out, n_in)
        self.to_tjx[tjx + ".kernel"] = linear_in(hf + ".weight", (*in_shape, *out_shape))
        self.to_hf[hf + ".weight"] = linear_out(tjx + ".kernel", n_out)
        if bias:
            self.shapes[hf + ".bias"] = (n_out,)
            self.to_tjx[tjx + ".bias"] = take(hf + ".bias", out_shape)
            self.to_hf[hf + ".bias"] = take(tjx + ".bias", (n_out,))

    def swiglu(self, hf: str, tjx: str, d: int, width: int) -> None:
        """A SwiGLU MLP's ``<hf>{gate,up,down}_proj`` ↔ tjx's ``<tjx>{fc_gate,fc_in,fc_out}``."""
        self.linear(hf + "gate_proj", tjx + "fc_gate", (d,), (width,))
        self.linear(hf + "up_proj", tjx + "fc_in", (d,), (width,))
        self.linear(hf + "down_proj", tjx + "fc_out", (width,), (d,))

    def fused(self, hf: str, parts: Sequence[tuple[str, tuple[int, ...]]], d: int) -> None:
        """``hf`` ``[Σ out, d]`` holds ``parts`` (tjx ``Dense``, its out shape) row after row."""
        sizes = [int(np.prod(out)) for _, out in parts]
        self.shapes[hf + ".weight"] = (sum(sizes), d)
        start = 0
        for (tjx, out), n in zip(parts, sizes, strict=True):
            self.to_tjx[tjx + ".kernel"] = rows(hf + ".weight", start, start + n, (d, *out))
            start += n
        self.to_hf[hf + ".weight"] = joined_rows(
            [(t + ".kernel", n) for (t, _), n in zip(parts, sizes, strict=True)]
        )

    def fused_experts(self, hf: str, tjx: str, e: int, d: int, f: int) -> None:
        """transformers' fused experts ``hf`` (``<hf>gate_up_proj`` ``[E, 2f, d]``: each expert's
        ``f`` gate rows, then its ``f`` up rows; ``<hf>down_proj`` ``[E, d, f]``) ↔ the tjx
        expert kernels ``<tjx>{fc_gate,fc_in,fc_out}.kernel`` (``[E, d, f]``, ``[E, f, d]``)."""
        gate_up, down = hf + "gate_up_proj", hf + "down_proj"
        gate, up, out = (f"{tjx}{n}.kernel" for n in ("fc_gate", "fc_in", "fc_out"))
        self.shapes[gate_up], self.shapes[down] = (e, 2 * f, d), (e, d, f)
        self.to_tjx[gate] = _expert_rows(gate_up, 0, f)
        self.to_tjx[up] = _expert_rows(gate_up, f, 2 * f)
        self.to_tjx[out] = _expert_rows(down, 0, d)
        self.to_hf[gate_up] = _joined_experts(gate, up)
        self.to_hf[down] = _joined_experts(out)

    def drop(self, hf_prefix: str | tuple[str, ...], tjx_prefix: str | tuple[str, ...]) -> None:
        """Forget every entry under ``hf_prefix`` (HF names) and ``tjx_prefix`` (tjx names): a
        part another layout replaces. Each may be a tuple of prefixes: one pass over the tables
        for all the layers a layout replaces (a 512-expert model's tables hold ~10^5 names)."""
        for table in (self.shapes, self.to_hf):
            for name in [n for n in table if n.startswith(hf_prefix)]:
                del table[name]
        for name in [n for n in self.to_tjx if n.startswith(tjx_prefix)]:
            del self.to_tjx[name]

    def mapping(self, ignored: Callable[[str], bool]) -> HFMapping:
        """The finished `HFMapping` (``ignored``: HF names a checkpoint may hold that carry
        nothing)."""
        return HFMapping(self.shapes, self.to_tjx, self.to_hf, ignored)
