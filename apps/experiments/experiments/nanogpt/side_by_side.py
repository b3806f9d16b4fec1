"""Run tjx's train step and nanoGPT's recipe alternately on the same CPU; report tokens/s.

Both contenders start from the same GPT-2 weights (tjx builds them and writes a HF checkpoint; the
tjx worker loads it through the trainer's ``--init-from`` path, the PyTorch worker reads the same
file) and take the same random token batches, fp32, dropout 0. Each worker compiles / warms up
with one step; their first losses must agree (relative 1e-4) or the run stops: a faster model that
computes something else would not count. Then, for each round, each worker runs 2 steps in turn
(the order alternates between rounds), so a change in the machine's load hits both alike; the
report is the median over rounds of each side's seconds per step, and their ratio.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PEER = Path(__file__).with_name("peer") / "torch_gpt.py"
LOSS_RTOL = 1e-4


@dataclass(frozen=True)
class Shape:
    """One side-by-side case: a trainer preset with overrides, and what nanoGPT needs of it."""

    name: str
    preset: str
    sets: tuple[str, ...]
    vocab: int
    seq: int
    batch: int
    d: int
    layers: int
    heads: int
    mlp: int
    extra: tuple[str, ...] = field(default=())

    def trainer_sets(self) -> list[str]:
        """``--set`` overrides giving the trainer this shape (fp32, dropout 0)."""
        return [
            *self.sets,
            f"model.vocab_size={self.vocab}",
            f"model.max_seq_len={self.seq}",
            f"data.seq_len={self.seq}",
            f"data.batch_size={self.batch}",
            "model.dropout=0.0",
            "model.precision.compute_dtype=float32",
            *self.extra,
        ]


SHAPES = {
    "gpt2_4l": Shape(
        "gpt2_4l", "tiny", (), 50304, 256, 8, 256, 4, 4, 1024,
        extra=("model.d_model=256", "model.mlp.dim=1024"),
    ),
    "tiny": Shape("tiny", "tiny", (), 257, 128, 16, 128, 4, 4, 512),
    "tiny_scan": Shape(
        "tiny_scan", "tiny", ("model.scan_layers=true",), 257, 128, 16, 128, 4, 4, 512
    ),
}  # fmt: skip


class Worker:
    """A contender process speaking the ``ready`` / ``run N`` / ``quit`` protocol."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.first_loss = float(self._reply("ready"))

    def _reply(self, expect: str | None = None) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if not line or (expect is not None and line[0] != expect):
            self.proc.kill()
            raise RuntimeError(f"{self.name} worker stopped (exit {self.proc.wait()})")
        return line[-1]

    def run(self, steps: int) -> float:
        """Seconds for ``steps`` steps."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"run {steps}\n")
        self.proc.stdin.flush()
        return float(self._reply())

    def ask(self, command: str, expect: str) -> list[str]:
        """Send one command and return its reply's words after ``expect`` (the reply's first
        word); the worker is killed and RuntimeError raised if it answers anything else."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        words = self.proc.stdout.readline().split()
        if not words or words[0] != expect:
            self.proc.kill()
            raise RuntimeError(f"{self.name} worker stopped (exit {self.proc.wait()})")
        return words[1:]

    def close(self) -> None:
        """Ask the worker to quit and wait for it."""
        if self.proc.poll() is None and self.proc.stdin is not None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def prepare(shape: Shape, folder: Path, seed: int = 0) -> dict[str, Any]:
    """Initial weights (HF GPT-2 layout) and two random batches, both sides' inputs."""
    from flax import nnx

    from experiments.nanogpt.tjx_worker import trainer_config
    from tjx import nn
    from trainer import resolve

    cfg = trainer_config({"preset": shape.preset, "sets": shape.trainer_sets()})
    model = nn.build_model(resolve(cfg, shape.vocab).model, rngs=nnx.Rngs(seed))
    if not isinstance(model, nn.GPT2):
        raise ValueError(f"{shape.name}: the side-by-side compares GPT-2 models (model.kind gpt2)")
    nn.save_hf_gpt2(model, folder / "weights")
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, shape.vocab, (2, shape.batch, shape.seq + 1), dtype=np.int32)
    np.savez(folder / "batches.npz", inputs=tokens[..., :-1], targets=tokens[..., 1:])
    return {
        "preset": shape.preset,
        "sets": shape.trainer_sets(),
        "vocab": shape.vocab,
        "weights_dir": str(folder / "weights"),
        "weights": str(folder / "weights" / "model.safetensors"),
        "batches": str(folder / "batches.npz"),
        **{k: getattr(shape, k) for k in ("seq", "d", "layers", "heads", "mlp")},
        "lr": 3e-4,
    }


def compare(tjx: Worker, peer: Worker, rounds: int, steps: int, tokens: int) -> dict[str, Any]:
    """Alternate the two workers; medians of seconds per step and tokens/s."""
    rel = abs(tjx.first_loss - peer.first_loss) / abs(peer.first_loss)
    if rel > LOSS_RTOL:
        raise RuntimeError(
            f"the two models disagree before any update: loss {tjx.first_loss:.6f} (tjx) vs "
            f"{peer.first_loss:.6f} (peer), relative {rel:.1e} > {LOSS_RTOL:g}"
        )
    times: dict[str, list[float]] = {tjx.name: [], peer.name: []}
    for r in range(rounds):
        for w in (tjx, peer) if r % 2 == 0 else (peer, tjx):
            times[w.name].append(w.run(steps) / steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "first_loss": {tjx.name: tjx.first_loss, peer.name: peer.first_loss},
        "first_loss_rel_diff": rel,
        "median_step_s": med,
        "tokens_per_s": {k: tokens / v for k, v in med.items()},
        "ratio": med[peer.name] / med[tjx.name],  # tjx tokens/s ÷ peer tokens/s
    }


def tjx_env(**extra: str) -> dict[str, str]:
    """The tjx worker's environment: this interpreter's ``sys.path`` (source roots included, also
    under Pants) as ``PYTHONPATH``, the CPU platform unless the caller chose one."""
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p or os.curdir) for p in sys.path)
    return env | extra


def run_shape(shape: Shape, peer_python: Path, rounds: int, steps: int) -> dict[str, Any]:
    """Prepare, start both workers, compare, stop them."""
    with tempfile.TemporaryDirectory(prefix="tjx-nanogpt-") as tmp:
        spec = prepare(shape, Path(tmp))
        blob = json.dumps(spec)
        tjx = Worker(
            "tjx", [sys.executable, "-m", "experiments.nanogpt.tjx_worker", blob], tjx_env()
        )
        try:
            peer_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # its own venv
            peer = Worker("nanogpt", [str(peer_python), str(PEER), blob], peer_env)
            try:
                out = compare(tjx, peer, rounds, steps, shape.batch * shape.seq)
            finally:
                peer.close()
        finally:
            tjx.close()
    return {"shape": shape.name, **out}
