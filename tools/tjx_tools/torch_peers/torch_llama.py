"""A Llama of llama_small's shape in plain PyTorch, under nanoGPT's and torchtitan's speed recipe.

The GPU suite's ``steps`` section runs this file as a child process of an interpreter with torch
(tools/tjx_tools/gpu_suite/one_call.py; nothing in tjx imports it). The model is written here
after torchtitan's Llama 3 (``torchtitan/models/llama3/model``: its structure, not its code) at
the shape the suite passes from tjx's own resolved ``llama_small`` config: token embedding, pre-norm
blocks of RMSNorm (``torch.nn.RMSNorm``), grouped-query attention (q, k, v, o without biases; RoPE
in LLaMA's rotate-half form, angles in float32; the key/value heads repeated to the query heads,
as torchtitan's ``repeat_kv``; ``scaled_dot_product_attention(is_causal=True)``) and a SwiGLU MLP
(``w2(silu(w1 x) · w3 x)``), a final RMSNorm and an untied LM head; mean cross-entropy over the
full logits. The recipe is nanoGPT's (as ``torch_speed.py``, the GPT-2 peer): normal(0, 0.02)
init, TF32 allowed, ``torch.compile`` of the model, bf16 autocast, ``torch.optim.AdamW(fused=True)``
with the preset's lr, betas and weight decay (on the 2-D parameters only), gradient-norm
clipping at the preset's norm, ``zero_grad(set_to_none=True)``; random token batches.

Timing (``_timing.py``): ``warmup`` steps (the first compiles: ``compile_s``), then ``steps``
steps each timed with CUDA events (the median is the figure) and ``steps`` more dispatched back
to back (``pipelined_step_s``). On a CPU (the suite's smoke check) the same code runs on the wall
clock, without fused AdamW and, when the spec says so, without compile.

Usage: ``python torch_llama.py '{"batch": 16, "seq": 1024, "vocab": 50304, "d": 768, "layers": 12,
"heads": 12, "kv_heads": 4, "mlp": 2048, "rope_theta": 10000.0, "norm_eps": 1e-06,
"lr": 0.0006, "betas": [0.9, 0.95], "weight_decay": 0.1, "clip": 1.0, "warmup": 4, "steps": 30,
"compile": true, "device": "cuda"}'``; prints one JSON object.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_s, pipelined_s, sync  # (beside this file)


def rope_tables(seq: int, head_dim: int, theta: float, device: str) -> tuple[torch.Tensor, ...]:
    """cos and sin ``[seq, head_dim]`` of LLaMA's rotate-half RoPE (float32)."""
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device).float() / head_dim)
    angles = torch.outer(torch.arange(seq, device=device).float(), inv)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x`` ``[b, s, h, d]`` rotated: dimension i pairs with i + d/2 (computed in float32)."""
    half = x.shape[-1] // 2
    x32 = x.float()
    rotated = torch.cat([-x32[..., half:], x32[..., :half]], dim=-1)
    return (x32 * cos[:, None] + rotated * sin[:, None]).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, d: int, heads: int, kv_heads: int) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, d // heads
        self.wq = nn.Linear(d, heads * self.head_dim, bias=False)
        self.wk = nn.Linear(d, kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(d, kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(heads * self.head_dim, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        q = rotate(self.wq(x).view(b, s, self.heads, self.head_dim), cos, sin)
        k = rotate(self.wk(x).view(b, s, self.kv_heads, self.head_dim), cos, sin)
        v = self.wv(x).view(b, s, self.kv_heads, self.head_dim)
        reps = self.heads // self.kv_heads  # torchtitan's repeat_kv
        k, v = (z.repeat_interleave(reps, dim=2) for z in (k, v))
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.wo(y.transpose(1, 2).reshape(b, s, -1))


class Block(nn.Module):
    def __init__(self, spec: dict) -> None:
        super().__init__()
        d, eps = spec["d"], spec["norm_eps"]
        self.attention_norm = nn.RMSNorm(d, eps=eps)
        self.attention = Attention(d, spec["heads"], spec["kv_heads"])
        self.ffn_norm = nn.RMSNorm(d, eps=eps)
        self.w1 = nn.Linear(d, spec["mlp"], bias=False)
        self.w3 = nn.Linear(d, spec["mlp"], bias=False)
        self.w2 = nn.Linear(spec["mlp"], d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), cos, sin)
        h = self.ffn_norm(x)
        return x + self.w2(F.silu(self.w1(h)) * self.w3(h))


class Llama(nn.Module):
    def __init__(self, spec: dict, device: str) -> None:
        super().__init__()
        self.tok_embeddings = nn.Embedding(spec["vocab"], spec["d"])
        self.layers = nn.ModuleList(Block(spec) for _ in range(spec["layers"]))
        self.norm = nn.RMSNorm(spec["d"], eps=spec["norm_eps"])
        self.output = nn.Linear(spec["d"], spec["vocab"], bias=False)  # untied
        cos, sin = rope_tables(spec["seq"], spec["d"] // spec["heads"], spec["rope_theta"], device)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        s = idx.shape[1]
        cos, sin = self.cos[:s], self.sin[:s]
        x = self.tok_embeddings(idx)
        for layer in self.layers:
            x = layer(x, cos, sin)
        logits = self.output(self.norm(x))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))


def init_weights(model: Llama) -> None:
    """normal(0, 0.02) for every matrix and the embedding (tjx's init_std), ones for the norms."""
    for p in model.parameters():
        if p.dim() >= 2:
            torch.nn.init.normal_(p, 0.0, 0.02)
        else:
            torch.nn.init.ones_(p)


def main() -> int:
    spec = json.loads(sys.argv[1])
    device = spec.get("device", "cuda")
    cuda = device == "cuda"
    torch.manual_seed(0)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    b, s = spec["batch"], spec["seq"]
    model = Llama(spec, device).to(device)
    init_weights(model)
    params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": spec["weight_decay"]},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=spec["lr"], betas=tuple(spec["betas"]), fused=cuda,
    )  # fmt: skip
    run = torch.compile(model) if spec.get("compile", True) else model
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16)
    gen = torch.Generator(device="cpu").manual_seed(0)
    batches = [
        tuple(torch.randint(0, spec["vocab"], (b, s), generator=gen).to(device) for _ in range(2))
        for _ in range(2)
    ]
    state = {"i": 0, "loss": torch.zeros(())}

    def step() -> None:
        x, y = batches[state["i"] % 2]
        state["i"] += 1
        with autocast:
            loss = run(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec["clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        state["loss"] = loss.detach()

    t0 = time.perf_counter()
    step()
    sync(cuda)
    compile_s = time.perf_counter() - t0  # the first step: compile + one step
    median = median_s(step, spec["steps"], cuda, warmup=max(0, spec["warmup"] - 1))
    pipelined = pipelined_s(step, spec["steps"], cuda)
    out = {
        "peer": "torchtitan-style Llama (tools/tjx_tools/torch_peers/torch_llama.py)",
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "batch": b,
        "seq": s,
        "params": params,
        "compiled": bool(spec.get("compile", True)),
        "compile_s": round(compile_s, 2),
        "median_step_s": median,
        "pipelined_step_s": pipelined,
        "tokens_per_s": b * s / median,
        "max_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "loss": float(state["loss"]),
    }
    print(json.dumps(out), flush=True)
    return 0 if math.isfinite(out["loss"]) else 1


if __name__ == "__main__":
    sys.exit(main())
