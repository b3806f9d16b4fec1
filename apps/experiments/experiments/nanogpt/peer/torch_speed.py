"""nanoGPT's speed recipe on the house's PyTorch GPT (``torch_gpt.GPT``): one JSON line of timings.

The GPU suite's ``peer`` row (tools/tjx_tools/gpu_suite/train_step.py) runs this file with the
machine's own python3 (torch is never part of tjx's resolve; nothing in tjx imports this file).
``torch_gpt.GPT`` is nanoGPT's GPT-2: learned positions, pre-LayerNorm blocks with biases, fused
q/k/v, ``scaled_dot_product_attention(is_causal=True)``, a 4x GELU (tanh) MLP, an LM head tied to
the token embedding, dropout 0. Around it, nanoGPT's training recipe as its ``train.py``/``bench.py``
run it on a GPU: nanoGPT's init (normal 0.02; residual projections 0.02/sqrt(2·layers)), TF32
allowed, ``torch.compile``, bf16 autocast, ``torch.optim.AdamW(fused=True)`` with lr 6e-4, betas
(0.9, 0.95), weight decay 0.1 on the 2-D parameters only, gradient-norm clipping at 1.0,
``zero_grad(set_to_none=True)``; random token batches. ``warmup`` steps (the first compiles), then
``steps`` steps each timed with CUDA events (start and end recorded around the step, synchronized
on the end) — the median is the figure — and ``steps`` more dispatched back to back with one
synchronize (``pipelined_step_s``). On a CPU (the suite's smoke check) the same code runs without
CUDA events (wall clock), without fused AdamW and, when the spec says so, without compile.

Usage: ``python torch_speed.py '{"batch": 16, "seq": 1024, "vocab": 50304, "d": 768, "layers": 12,
"heads": 12, "warmup": 4, "steps": 30, "compile": true, "device": "cuda"}'``.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from torch_gpt import GPT  # noqa: E402  (the house's port beside this file)


def nanogpt_init(model: GPT, layers: int) -> None:
    """nanoGPT's ``_init_weights``: normal(0, 0.02) weights and embeddings, zero biases; the
    residual projections (``c_proj``) at 0.02 / sqrt(2 · layers)."""
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            torch.nn.init.zeros_(p)
        elif "ln" in name:
            torch.nn.init.ones_(p)
        elif name.endswith("c_proj.weight"):
            torch.nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * layers))
        else:
            torch.nn.init.normal_(p, 0.0, 0.02)


def main() -> int:
    spec = json.loads(sys.argv[1])
    device = spec.get("device", "cuda")
    cuda = device == "cuda"
    torch.manual_seed(0)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    b, s, layers = spec["batch"], spec["seq"], spec["layers"]
    model = GPT(spec["vocab"], s, spec["d"], layers, spec["heads"], 4 * spec["d"]).to(device)
    nanogpt_init(model, layers)
    params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=6e-4,
        betas=(0.9, 0.95),
        fused=cuda,
    )
    run = torch.compile(model) if spec.get("compile", True) else model
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16)
    gen = torch.Generator(device="cpu").manual_seed(0)
    batches = [
        (
            torch.randint(0, spec["vocab"], (b, s), generator=gen).to(device),
            torch.randint(0, spec["vocab"], (b, s), generator=gen).to(device),
        )
        for _ in range(2)
    ]

    def step(i: int) -> torch.Tensor:
        x, y = batches[i % 2]
        with autocast:
            loss = run(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    step(0)
    sync()
    compile_s = time.perf_counter() - t0  # the first step: compile + one step
    for i in range(1, spec["warmup"]):
        step(i)
    sync()
    times = []
    loss = torch.zeros(())
    for i in range(spec["steps"]):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            loss = step(i)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            loss = step(i)
            times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(spec["steps"]):
        loss = step(i)
    sync()
    pipelined = (time.perf_counter() - t0) / spec["steps"]
    median = statistics.median(times)
    out = {
        "peer": "nanoGPT recipe on tjx's PyTorch GPT-2 port (torch_gpt.GPT)",
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "batch": b,
        "seq": s,
        "params": params,
        "compiled": bool(spec.get("compile", True)),
        "compile_s": round(compile_s, 2),
        "median_step_s": median,
        "min_step_s": min(times),
        "pipelined_step_s": pipelined,
        "tokens_per_s": b * s / median,
        "max_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "loss": float(loss),
    }
    print(json.dumps(out), flush=True)
    return 0 if math.isfinite(out["loss"]) else 1


if __name__ == "__main__":
    sys.exit(main())
