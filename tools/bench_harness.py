"""Requests/s of the lm-evaluation-harness model's loglikelihood scoring: batched vs one per call.

    python tools/bench_harness.py --configs tiny --requests 64 --batch-size 16
    python tools/bench_harness.py --configs gpt2_small --requests 16 --batch-size 8

Random requests shaped like HellaSwag's (a 30–90-token context, a 5–25-token continuation), random
weights (the speed does not depend on them). Three ways to score the same requests:

* *batched*: eval's ``Scorer``, what the ``tjx`` harness model runs: longest first,
  ``--batch-size`` rows per jitted call, padded to a few length buckets.
* *loop*: the plain adapter, one request per call, jitted at the request's own length (so it
  compiles once per distinct length, as a naive loop over the harness's requests does), the
  log-softmax sum taken on the host.
* *loop, bucketed*: one request per call through ``Scorer`` with batch 1 (the buckets without the
  batching).

Each is timed *cold* (a task's single pass: compilations included, what a user waits for) and
*warm* (a second pass over the same requests: compiled functions only). The compilations of
each are counted.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import jax
import numpy as np
from flax import nnx

from eval import Scorer
from tjx import nn

SHAPES = {
    # apps/trainer/configs/tiny.yaml's model (byte tokens) and GPT-2 small's (HF's shapes).
    "tiny": lambda: nn.GPT2Config(
        vocab_size=257,
        max_seq_len=128,
        d_model=128,
        num_layers=4,
        num_heads=4,
        mlp=nn.MLPConfig(dim=512),
    ),
    "gpt2_small": lambda: nn.gpt2_config("small"),
}


def requests(n: int, vocab: int, seed: int) -> list[tuple[list[int], int]]:
    """``n`` (tokens, continuation length) rows shaped like HellaSwag's."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ctx, cont = int(rng.integers(30, 91)), int(rng.integers(5, 26))
        out.append((rng.integers(0, vocab, ctx + cont).tolist(), cont))
    return out


def run(scorer: Scorer, reqs: list[tuple[list[int], int]]) -> float:
    """Seconds to score ``reqs``, longest first, ``scorer.batch_size`` per call."""
    order = sorted(reqs, key=lambda r: -len(r[0]))
    start = time.perf_counter()
    for i in range(0, len(order), scorer.batch_size):
        chunk = order[i : i + scorer.batch_size]
        scorer.score([r[0] for r in chunk], [r[1] for r in chunk])
    return time.perf_counter() - start


class PlainLoop:
    """One request per call at its own length: the adapter without buckets or batching."""

    def __init__(self, model: Any) -> None:
        self.compiles = 0
        graphdef, state = nnx.split(model)

        def logp(state: Any, tokens: jax.Array) -> jax.Array:
            self.compiles += 1
            return jax.nn.log_softmax(nnx.merge(graphdef, state)(tokens), axis=-1)

        self._logp, self._state = jax.jit(logp), state

    def run(self, reqs: list[tuple[list[int], int]]) -> float:
        """Seconds to score ``reqs`` one by one."""
        start = time.perf_counter()
        for seq, n in reqs:
            out = np.asarray(self._logp(self._state, np.asarray([seq[:-1]], np.int32)))[0]
            k = len(seq) - 1
            float(out[np.arange(k - n, k), seq[-n:]].sum())
        return time.perf_counter() - start


def bench(name: str, n: int, batch_size: int) -> dict[str, Any]:
    """Cold and warm requests/s of each way, and their compilations, for one model shape."""
    config = SHAPES[name]()
    model = nn.build_model(config, rngs=nnx.Rngs(0))
    reqs = requests(n, int(config.vocab_size), seed=0)
    out: dict[str, Any] = {"config": name, "requests": n, "batch_size": batch_size}
    ways: dict[str, Any] = {
        "batched": lambda s: run(s, reqs),
        "loop": lambda s: s.run(reqs),
        "loop_bucketed": lambda s: run(s, reqs),
    }
    scorers: dict[str, Any] = {"batched": Scorer(model, batch_size), "loop": PlainLoop(model)}
    scorers["loop_bucketed"] = Scorer(model, 1)
    for label, timed in ways.items():
        scorer = scorers[label]
        out[f"{label}_cold_req_per_s"] = n / timed(scorer)
        out[f"{label}_compiles"] = scorer.compiles
        out[f"{label}_warm_req_per_s"] = n / timed(scorer)
    for when in ("cold", "warm"):
        out[f"speedup_{when}"] = out[f"batched_{when}_req_per_s"] / out[f"loop_{when}_req_per_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    """Print one line per config (and write JSON with ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="tiny,gpt2_small")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = []
    for name in args.configs.split(","):
        row = bench(name, args.requests, args.batch_size)
        rows.append(row)
        for label in ("batched", "loop", "loop_bucketed"):
            print(
                f"{name:<11} {label:<14} cold {row[f'{label}_cold_req_per_s']:8.2f} req/s   "
                f"warm {row[f'{label}_warm_req_per_s']:8.2f} req/s   "
                f"{row[f'{label}_compiles']} compiles",
                flush=True,
            )
        print(
            f"{name:<11} batched / loop: {row['speedup_cold']:.1f}x cold, "
            f"{row['speedup_warm']:.1f}x warm",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
