"""The PyTorch side of the nanoGPT side-by-side: a GPT built to nanoGPT's published recipe.

Runs only inside the scratch venv that `experiments.nanogpt.venv` makes (torch + numpy); nothing in
tjx imports it, and Pants does not own it (apps/experiments/experiments/BUILD ships it as a plain file).

The model follows nanoGPT's architecture and training choices, written here from its description:
token + learned position embeddings, pre-LayerNorm blocks with biases (eps 1e-5), fused q/k/v
projection, ``scaled_dot_product_attention(is_causal=True)``, a 4×-wide GELU MLP, final LayerNorm,
an LM head tied to the token embedding; ``torch.optim.AdamW`` with weight decay on the matrices
only, gradient-norm clipping at 1.0, mean cross-entropy. GELU uses the tanh form, as GPT-2 (and
tjx's GPT-2) does, so the two models compute the same function from the same weights.

Protocol (stdin/stdout, one line each): the worker prints ``ready <loss>`` after loading the HF
GPT-2 weights tjx wrote and running one step on the first batch (the loss before the update, for
the orchestrator's equivalence check); then ``run N`` runs N steps and prints the wall seconds;
``quit`` ends it. Two more commands serve the experiments app's side-by-side study (the first
three are unchanged): ``losses N`` runs N steps and prints ``losses <seconds> <loss> ...`` (each
step's loss before its update), and ``val`` prints ``val <loss>``, the mean cross-entropy over the
held-out batches of ``spec["val_batches"]`` (an ``.npz`` of ``inputs``/``targets``, every batch
the same shape).
"""

from __future__ import annotations

import json
import math
import struct
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812


class SelfAttention(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, d))


class Block(nn.Module):
    def __init__(self, d: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d, eps=1e-5)
        self.attn = SelfAttention(d, heads)
        self.ln_2 = nn.LayerNorm(d, eps=1e-5)
        self.c_fc = nn.Linear(d, mlp)
        self.c_proj = nn.Linear(mlp, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.c_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab: int, seq: int, d: int, layers: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(seq, d)
        self.h = nn.ModuleList(Block(d, heads, mlp) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d, eps=1e-5)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        logits = self.ln_f(x) @ self.wte.weight.T  # the tied LM head
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """A float32 safetensors file as numpy arrays (the format is a JSON header and raw bytes)."""
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + size])
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        if meta["dtype"] != "F32":
            raise ValueError(f"{name}: expected F32 weights, got {meta['dtype']}")
        start, end = meta["data_offsets"]
        data = np.frombuffer(raw, np.float32, (end - start) // 4, 8 + size + start)
        out[name] = data.reshape(meta["shape"]).copy()
    return out


def load_hf_weights(model: GPT, weights: dict[str, np.ndarray]) -> None:
    """HF GPT-2 tensors (Conv1D ``[in, out]``) into the model (``nn.Linear`` ``[out, in]``)."""
    w = {k.removeprefix("transformer."): torch.from_numpy(v) for k, v in weights.items()}
    own = {
        "wte.weight": w["wte.weight"],
        "wpe.weight": w["wpe.weight"],
        "ln_f.weight": w["ln_f.weight"],
        "ln_f.bias": w["ln_f.bias"],
    }
    for i in range(len(model.h)):
        p = f"h.{i}."
        for name in ("ln_1", "ln_2"):
            own[f"{p}{name}.weight"], own[f"{p}{name}.bias"] = (
                w[f"{p}{name}.weight"],
                w[f"{p}{name}.bias"],
            )
        for hf, mine in (("attn.c_attn", "attn.c_attn"), ("attn.c_proj", "attn.c_proj"),
                         ("mlp.c_fc", "c_fc"), ("mlp.c_proj", "c_proj")):  # fmt: skip
            own[f"{p}{mine}.weight"] = w[f"{p}{hf}.weight"].T.contiguous()
            own[f"{p}{mine}.bias"] = w[f"{p}{hf}.bias"]
    model.load_state_dict(own, strict=True)


def validation_loss(model: GPT, path: str) -> float:
    """Mean cross-entropy over the held-out batches in ``path`` (equal-sized batches, so the mean
    of the batch means is the token mean)."""
    held = np.load(path)
    with torch.no_grad():
        losses = [
            float(model(torch.from_numpy(x).long(), torch.from_numpy(y).long()))
            for x, y in zip(held["inputs"], held["targets"])
        ]
    return sum(losses) / len(losses)


def main() -> int:
    spec = json.loads(sys.argv[1])
    torch.manual_seed(0)
    torch.set_num_threads(int(spec.get("threads", torch.get_num_threads())))
    model = GPT(spec["vocab"], spec["seq"], spec["d"], spec["layers"], spec["heads"], spec["mlp"])
    load_hf_weights(model, read_safetensors(Path(spec["weights"])))
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=spec["lr"],
        betas=(0.9, 0.95),
    )
    batches = np.load(spec["batches"])
    xs = [torch.from_numpy(a).long() for a in batches["inputs"]]
    ys = [torch.from_numpy(a).long() for a in batches["targets"]]

    def step(i: int) -> float:
        loss = model(xs[i % len(xs)], ys[i % len(ys)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return float(loss.detach())

    first = step(0)
    print(f"ready {first!r}", flush=True)
    done = 1
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "quit":
            break
        if cmd[0] == "losses":
            t0 = time.perf_counter()
            losses = [step(done + i) for i in range(int(cmd[1]))]
            done += len(losses)
            seconds = time.perf_counter() - t0
            print("losses", repr(seconds), *(repr(x) for x in losses), flush=True)
            continue
        if cmd[0] == "val":
            print(f"val {validation_loss(model, spec['val_batches'])!r}", flush=True)
            continue
        t0 = time.perf_counter()
        for _ in range(int(cmd[1])):
            step(done)
            done += 1
        print(f"{time.perf_counter() - t0!r}", flush=True)
    return 0 if math.isfinite(first) else 1


if __name__ == "__main__":
    sys.exit(main())
