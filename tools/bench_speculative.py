"""Speculative decoding (`tjx.nn.generate_speculative`) against greedy decoding (`tjx.nn.generate`
at temperature 0) on one model and prompt: tokens/s of each on the current device.

    python tools/bench_speculative.py [--new-tokens 64] [--repeats 5] [--json out.json]

`time_speculative_vs_greedy(model, prompt, new_tokens)` is the measurement (the GPU suite's
"speculative decoding vs greedy" cell calls it with its model): both calls are compiled first
(a warm-up call each, timed apart as ``*_first_call_s``), then timed ``repeats`` times in
turn, the median wall time of each whole call (prefill included, the tokens fetched to the host)
giving its tokens/s. It checks that both emitted the same tokens and reports the drafts'
acceptance rate and the main model's passes over its weights: greedy makes one per token, the
speculative loop one two-token pass per step (plus each one's prefill). Whether that is faster
depends on the acceptance rate and on how much more a two-token pass costs than a one-token one,
which is what the timing measures.

The command line builds two small random MTP models (a Llama with ``mtp.depths=1``) and times
both on the device it runs on (label the figures with it: ``device`` in the output):

* ``random``: random weights: its drafts are seldom right (the acceptance rate is near 0), so it
  shows the cost of verifying a draft that is rejected;
* ``copying``: the draft copies the main model by construction (attention writes nothing, so the
  main model's next token depends on the current one only, and depth 1 is the main layer behind
  an ``eh_proj`` that passes the embedding; `copying_mtp_model`): every draft is accepted, the
  best case.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tjx import nn

#: The command line's model: small enough for a CPU, large enough that the weights matter.
SMALL: dict[str, Any] = dict(
    vocab_size=1024, max_seq_len=256, d_model=256, num_layers=4, num_heads=8, num_kv_heads=4,
    mlp=nn.MLPConfig(dim=768), mtp=nn.MTPConfig(depths=1),
)  # fmt: skip


def time_speculative_vs_greedy(
    model: nn.DecoderLM, prompt: Any, new_tokens: int, *, repeats: int = 5
) -> dict[str, Any]:
    """Tokens/s of greedy and speculative decoding of ``prompt`` by ``model`` (see the module).

    Parameters
    ----------
    model : tjx.nn.DecoderLM
        A decoder with ``mtp.depths >= 1``.
    prompt : array-like
        int ``[P]`` or ``[b, P]`` token ids (every row ``P`` long).
    new_tokens : int
        Tokens each call emits per row (no end-of-sequence id: both emit all of them).
    repeats : int
        Timed calls of each (after one warm-up call each); the median is reported.

    Returns
    -------
    dict
        ``device``, ``platform``, ``rows``, ``prompt_tokens``, ``new_tokens``, ``repeats``;
        ``greedy_s`` and ``speculative_s`` (median seconds per call), ``greedy_tokens_per_s``
        and ``speculative_tokens_per_s`` (new tokens of every row per second), ``speedup``
        (greedy's time over speculative's), the first calls' seconds (compile included),
        ``acceptance_rate``, ``drafted``, ``accepted``, the main model's passes of each
        (``greedy_main_passes``, ``speculative_main_passes``, prefill included) and
        ``same_tokens`` (whether both emitted the same tokens; they should) and ``divergence``
        (None, or where they first differ and whether that was a near tie: `first_divergence`).
    """
    ids = np.asarray(prompt, np.int32)
    ids = ids[None, :] if ids.ndim == 1 else ids
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1; got {repeats}")

    def greedy() -> Any:
        return np.asarray(nn.generate(model, ids, max_new_tokens=new_tokens))

    def speculative() -> Any:
        spec = nn.generate_speculative(model, ids, max_new_tokens=new_tokens)
        return spec, np.asarray(spec.tokens)

    start = time.perf_counter()
    plain = greedy()
    greedy_first = time.perf_counter() - start
    start = time.perf_counter()
    spec, drafted_tokens = speculative()
    speculative_first = time.perf_counter() - start
    times: dict[str, list[float]] = {"greedy": [], "speculative": []}
    for _ in range(repeats):  # in turn, so that a slow spell of a shared machine hits both
        for name, call in (("greedy", greedy), ("speculative", speculative)):
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    g, s = statistics.median(times["greedy"]), statistics.median(times["speculative"])
    emitted = ids.shape[0] * new_tokens
    device = jax.devices()[0]
    return {
        "device": device.device_kind,
        "platform": device.platform,
        "rows": int(ids.shape[0]),
        "prompt_tokens": int(ids.shape[1]),
        "new_tokens": int(new_tokens),
        "repeats": repeats,
        "greedy_s": g,
        "speculative_s": s,
        "greedy_tokens_per_s": emitted / g,
        "speculative_tokens_per_s": emitted / s,
        "speedup": g / s,
        "greedy_first_call_s": greedy_first,
        "speculative_first_call_s": speculative_first,
        "acceptance_rate": spec.acceptance_rate,
        "drafted": spec.drafted,
        "accepted": spec.accepted,
        "greedy_main_passes": new_tokens,  # the prefill, then one step per further token
        "speculative_main_passes": 1 + spec.passes,
        "same_tokens": bool(np.array_equal(plain, drafted_tokens)),
        "divergence": first_divergence(model, ids.shape[1], plain, drafted_tokens),
    }


def first_divergence(
    model: nn.DecoderLM, prompt_len: int, plain: np.ndarray, drafted: np.ndarray
) -> dict[str, Any] | None:
    """Where speculative decoding first left greedy's tokens, and whether that was a near tie.

    In 16-bit compute the two decoders' logits differ in their last bits (a two-token
    verification pass multiplies other shapes than a one-token step, and a GPU's GEMMs round by
    shape), so where two tokens' logits are that close the two may pick differently and the
    rows go their own ways from there: rounding, not a wrong token. At the first position where
    the outputs differ (the earliest over the rows), the greedy prefix is run once through the
    model and once through its float32 twin (the same weights): ``margin`` is the float32
    logit of greedy's token less speculative's, ``noise`` the largest gap between the model's
    own logits and the float32 ones there. ``near_tie``: ``|margin| <= noise`` (the model's own
    precision cannot tell the two apart); a wrong token in the speculative loop (a position, a
    mask, a cache slot) shows a margin far above the noise.

    Returns
    -------
    dict or None
        None when the tokens are the same; else ``row``, ``token`` (the index among the new
        tokens), ``greedy`` and ``speculative`` (the two ids), ``margin``, ``noise`` and
        ``near_tie``.
    """
    differ = np.argwhere(plain != drafted)
    if not differ.size:
        return None
    t = int(differ[:, 1].min())
    row = int(differ[differ[:, 1] == t][0, 0])
    prefix = jnp.asarray(plain[row : row + 1, :t])
    twin = type(model)(model.config.replace(precision=nn.Precision(jnp.float32, jnp.float32)),
                       rngs=nnx.Rngs(0))  # fmt: skip
    nnx.update(twin, nnx.state(model))
    own = np.asarray(model(prefix)[0, -1], np.float64)
    exact = np.asarray(twin(prefix)[0, -1], np.float64)
    greedy, spec = int(plain[row, t]), int(drafted[row, t])
    margin, noise = float(exact[greedy] - exact[spec]), float(np.max(np.abs(own - exact)))
    return {"row": row, "token": t - prompt_len, "greedy": greedy, "speculative": spec,
            "margin": margin, "noise": noise, "near_tie": abs(margin) <= noise}  # fmt: skip


def copying_mtp_model(config: nn.TransformerConfig, seed: int = 0) -> nn.Llama:
    """A one-layer MTP model whose depth 1 drafts what the main model will say (see the module):
    output projections of attention zero, embedding rows of RMS 1 (``enorm(e) = e`` up to eps),
    depth 1's block the main layer's and ``eh_proj = [I; 0]``, its norm the final norm."""
    config = config.replace(num_layers=1, **{"mtp.depths": 1})
    model = nn.Llama(config, rngs=nnx.Rngs(seed))
    flat = nn.get_flat_params(model)
    e = flat["embed.embedding"]
    flat["embed.embedding"] = e / np.sqrt(np.mean(e * e, -1, keepdims=True))
    out = "stack.layers.0.attn.out.kernel"
    flat[out] = np.zeros_like(flat[out])
    for name in [n for n in flat if n.startswith("stack.layers.0.")]:
        flat[name.replace("stack.layers.0.", "mtp.layers.0.block.")] = flat[name]
    d = config.d_model
    flat["mtp.layers.0.eh_proj.kernel"] = np.concatenate([np.eye(d), np.zeros((d, d))])
    flat["mtp.layers.0.norm.scale"] = flat["final_norm.scale"]
    nn.set_flat_params(model, flat)
    return model


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    config = nn.LlamaConfig(**SMALL)
    prompt = np.random.default_rng(0).integers(0, config.vocab_size, (1, args.prompt_tokens))
    models = {
        "random": nn.Llama(config, rngs=nnx.Rngs(0)),
        "copying": copying_mtp_model(config),
    }
    results = {}
    for name, model in models.items():
        row = time_speculative_vs_greedy(model, prompt, args.new_tokens, repeats=args.repeats)
        results[name] = row
        print(
            f"{name:8s} on {row['platform']} ({row['device']}): greedy "
            f"{row['greedy_tokens_per_s']:.1f} tok/s, speculative "
            f"{row['speculative_tokens_per_s']:.1f} tok/s ({row['speedup']:.2f}x); acceptance "
            f"{row['acceptance_rate']:.2f}; main-model passes {row['greedy_main_passes']} vs "
            f"{row['speculative_main_passes']}; same tokens: {row['same_tokens']}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
